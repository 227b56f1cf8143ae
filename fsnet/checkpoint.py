"""Release files, Lightning checkpoints and original FullSubNet checkpoints -> a ready model.

A release file is plain data (``torch.load(weights_only=True)`` reads it): no classes are
pickled, so renaming a module never breaks an old file.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fsnet.config import ModelConfig
from fsnet.errors import FsnetError
from fsnet.files import atomic_write
from fsnet.model import FastFullSubNet

RELEASE_FORMAT = "fsnet-release"
RELEASE_FORMAT_VERSION = 1
BUNDLED_RELEASE = Path(__file__).parent / "pretrained" / "fast_fullsubnet_debian_audio.pt"


def _versions() -> dict[str, str]:
    from fsnet import __version__

    return {"fsnet": __version__, "torch": str(torch.__version__)}


def save_release(model: FastFullSubNet, path: str | os.PathLike, half: bool = False) -> Path:
    """Write ``{model_config, state_dict, sample_rate, stft, versions}`` atomically.

    ``half=True`` stores float16 weights (half the size); they load back as float32.
    """
    cfg = model.config
    state_dict = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": RELEASE_FORMAT,
        "format_version": RELEASE_FORMAT_VERSION,
        "model_config": cfg.to_dict(),
        "norm": model.norm,
        "state_dict": state_dict,
        "sample_rate": cfg.sample_rate,
        "stft": {"n_fft": cfg.n_fft, "hop_samples": cfg.hop_samples, "window": "hann"},
        "versions": _versions(),
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


# ----------------------------------------------------------------------------- original layout
_ORIGINAL_PREFIXES = (
    ("encoder.", "encoder."),
    ("bottleneck.", "bottleneck."),
    ("decoder_lstm.", "decoder."),
)


def _rename_original_key(key: str) -> str | None:
    """``encoder.1.sequence_model.weight_hh_l0`` -> ``encoder.1.rnn.weight_hh_l0`` etc."""
    if key.startswith("mel_scale."):
        return None  # rebuilt from the config
    for old, new in _ORIGINAL_PREFIXES:
        if key.startswith(old):
            rest = key[len(old) :]
            rest = rest.replace("sequence_model.", "rnn.").replace("fc_output_layer.", "proj.")
            return new + rest
    raise FsnetError(f"unexpected weight {key!r}: not a Fast FullSubNet checkpoint")


def _infer_config(state_dict: dict[str, torch.Tensor], overrides: dict[str, Any]) -> dict[str, Any]:
    """Architecture fields from fsnet-layout weight shapes (look_ahead, shrink_size: defaults/overrides)."""

    def stack_sizes(prefix: str) -> list[int]:
        sizes, i = [], 0
        while f"{prefix}.{i}.rnn.weight_hh_l0" in state_dict:
            sizes.append(state_dict[f"{prefix}.{i}.rnn.weight_hh_l0"].shape[1])
            i += 1
        return sizes

    try:
        w_hh = state_dict["bottleneck.rnn.weight_hh_l0"]
        gates = w_hh.shape[0] // w_hh.shape[1]
        num_layers = len(
            [k for k in state_dict if re.fullmatch(r"bottleneck\.rnn\.weight_hh_l\d+", k)]
        )
        unit = state_dict["bottleneck.rnn.weight_ih_l0"].shape[1]
        enc_out_neighbors = overrides.get("encoder_output_num_neighbors", 0)
        inferred = {
            "num_mels": state_dict["encoder.0.rnn.weight_ih_l0"].shape[1],
            "encoder_hidden_sizes": stack_sizes("encoder"),
            "decoder_hidden_sizes": stack_sizes("decoder"),
            "bottleneck_hidden_size": w_hh.shape[1],
            "bottleneck_num_layers": num_layers,
            "rnn_type": {4: "LSTM", 3: "GRU"}[gates],
            "noisy_num_neighbors": (unit - (2 * enc_out_neighbors + 1) - 1) // 2,
            "n_fft": 2
            * (
                state_dict[f"decoder.{len(stack_sizes('decoder')) - 1}.proj.weight"].shape[0] // 2
                - 1
            ),
        }
    except (KeyError, IndexError) as exc:
        raise FsnetError(
            f"cannot infer the architecture from the weights (missing {exc})"
        ) from None
    return {**inferred, **overrides}


def convert_original_state_dict(
    state_dict: dict[str, torch.Tensor], **overrides: Any
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map an original Audio-WestlakeU/FullSubNet Fast FullSubNet state dict to fsnet's layout.

    ``module.`` prefixes (DataParallel/DDP) are stripped. Sizes come from the weight shapes;
    ``look_ahead`` and ``shrink_size`` are not visible in weights: the official recipe's values
    (2, 2) are used unless given as overrides.
    """
    renamed = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        new_key = _rename_original_key(key)
        if new_key is not None:
            renamed[new_key] = value
    cfg = ModelConfig.from_dict(_infer_config(renamed, overrides))
    return cfg, renamed


def to_original_state_dict(model: FastFullSubNet) -> dict[str, torch.Tensor]:
    """fsnet weights in the original repository's layout (the inverse of the converter)."""
    out = {}
    for key, value in model.state_dict().items():
        for new, old in (
            ("encoder.", "encoder."),
            ("bottleneck.", "bottleneck."),
            ("decoder.", "decoder_lstm."),
        ):
            if key.startswith(new):
                rest = (
                    key[len(new) :]
                    .replace("rnn.", "sequence_model.")
                    .replace("proj.", "fc_output_layer.")
                )
                out[old + rest] = value
    out["mel_scale.fb"] = model.mel_fb.clone()
    return out


# ----------------------------------------------------------------------------- loading
def _read(path: Path) -> Any:
    if path.is_dir():
        raise FsnetError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise FsnetError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise FsnetError(f"{path} is not a readable torch checkpoint: it is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:  # permissions, I/O: the file itself may be fine
        raise FsnetError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise FsnetError(f"{path} is not a torch checkpoint (or it is truncated)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail anywhere in the unpickler
        # torch's own text names its internals (PytorchStreamReader, a bare KeyError '101'):
        # say what it means for the file instead
        text = str(exc)
        if "central directory" in text:
            reason = "it is cut short (an interrupted copy or download?)"
        elif "not a ZIP archive" in text:  # torch's zip header, but bytes missing or changed
            reason = "it is damaged (bytes missing or changed)"
        else:
            reason = "it is damaged or another kind of file"
        raise FsnetError(f"{path} is not a readable torch checkpoint: {reason}") from None
    # Lightning checkpoints may hold callback state that is not plain data; they are the
    # user's own training output, so read them the way Lightning itself does.
    if path.suffix != ".ckpt":
        raise FsnetError(
            f"{path} is not an fsnet release file or a FullSubNet state dict (it is not plain "
            "tensor data; only Lightning .ckpt files from train.py are unpickled)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise FsnetError(f"cannot read checkpoint {path}: {exc}") from None


def _fixed_config(path: Path, stored: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The stored config of an fsnet checkpoint; overrides may only repeat it.

    The weights were trained with that config: another look-ahead or shrink size would load
    without complaint and give a different, worse model. Original FullSubNet checkpoints store no
    config, which is what the overrides are for.
    """
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise FsnetError(f"unknown model config key(s) {unknown}")
    changed = {k: v for k, v in overrides.items() if stored.get(k, v) != v or k not in stored}
    if changed:
        key, value = next(iter(changed.items()))
        raise FsnetError(
            f"{path} was trained with {key}={stored.get(key)!r}, not {value!r}; config overrides "
            "only apply to original FullSubNet checkpoints"
        )
    return dict(stored)


def load_model(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", **overrides: Any
) -> FastFullSubNet:
    """Load a model in eval mode.

    ``path``: an fsnet release file, a Lightning ``.ckpt`` from ``train.py``, or a checkpoint of
    the original FullSubNet trainer (a dict whose ``model`` entry is the state dict, or the bare
    state dict). None loads the bundled pretrained model. Keyword overrides set config fields
    (and ``norm='utterance'`` reproduces an original checkpoint trained with offline norm).
    """
    path = Path(path) if path is not None else BUNDLED_RELEASE
    if not path.exists() and path == BUNDLED_RELEASE:
        raise FsnetError(f"no bundled pretrained model at {path}; pass a checkpoint path")
    payload = _read(path)
    norm = overrides.pop("norm", None)
    if not isinstance(payload, dict):
        raise FsnetError(f"{path} is not a checkpoint (found {type(payload).__name__})")
    if payload.get("format") == RELEASE_FORMAT:
        cfg_dict, state_dict = payload["model_config"], payload["state_dict"]
        norm = norm or payload.get("norm", "cumulative")
        cfg = ModelConfig.from_dict(_fixed_config(path, cfg_dict, overrides))
    elif "state_dict" in payload and "hyper_parameters" in payload:
        hparams = payload["hyper_parameters"]
        if "model_config" not in hparams:
            raise FsnetError(f"{path} is a Lightning checkpoint without a model_config")
        cfg = ModelConfig.from_dict(_fixed_config(path, dict(hparams["model_config"]), overrides))
        state_dict = {
            k[len("model.") :]: v
            for k, v in payload["state_dict"].items()
            if k.startswith("model.")
        }
    else:
        original = payload.get("model", payload)
        if not isinstance(original, dict) or not any(
            k.removeprefix("module.").startswith(("encoder.", "decoder_lstm.")) for k in original
        ):
            raise FsnetError(f"{path}: unrecognised checkpoint layout (keys: {list(payload)[:5]})")
        cfg, state_dict = convert_original_state_dict(original, **overrides)
    model = FastFullSubNet(cfg, norm=norm or "cumulative")
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise FsnetError(f"{path} does not match the model architecture: {detail}") from None
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as exc:  # unknown device, or no CUDA here
        raise FsnetError(f"cannot use device {device!r}: {str(exc).splitlines()[0]}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m fsnet.checkpoint SRC DST [--half]``: any loadable checkpoint -> release file."""
    import argparse

    from fsnet.cli import run

    parser = argparse.ArgumentParser(
        prog="python -m fsnet.checkpoint",
        description="Write an fsnet release file from a Lightning .ckpt, a release file or an "
        "original FullSubNet checkpoint.",
    )
    parser.add_argument("source", help="checkpoint to read")
    parser.add_argument("destination", help="release file to write (atomically)")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    parser.add_argument(
        "--look-ahead", type=int, default=None, help="override (original checkpoints)"
    )
    parser.add_argument(
        "--shrink-size", type=int, default=None, help="override (original checkpoints)"
    )
    args = parser.parse_args(argv)
    overrides = {
        k: v
        for k, v in (("look_ahead", args.look_ahead), ("shrink_size", args.shrink_size))
        if v is not None
    }

    def work() -> int:
        try:
            if Path(args.destination).is_dir():
                raise FsnetError(f"destination {args.destination} is a directory; give a file name")
            if Path(args.destination).exists() and (
                Path(args.destination).suffix == ".ckpt"
                or (Path(args.source).exists() and os.path.samefile(args.source, args.destination))
            ):
                # a release file has no optimiser state: writing it over a training checkpoint
                # would make that run impossible to resume
                raise FsnetError(
                    f"{args.destination} exists and is a checkpoint; write the release file to a"
                    " new name"
                )
            model = load_model(args.source, **overrides)
            save_release(model, args.destination, half=args.half)
        except OSError as exc:
            raise FsnetError(f"cannot write {args.destination}: {exc.strerror or exc}") from None
        print(f"wrote {args.destination} ({model.config.to_dict()})")
        return 0

    return run(work)


if __name__ == "__main__":
    raise SystemExit(main())
