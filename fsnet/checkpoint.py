"""Release files, Lightning checkpoints and original FullSubNet checkpoints -> a ready model.

A release file is plain data (``torch.load(weights_only=True)`` reads it): no classes are
pickled, so renaming a module never breaks an old file. Every checkpoint is read that way
(:func:`read_checkpoint`): unpickling a class or function from a file runs code of its choosing.
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


def save_release(
    model: FastFullSubNet,
    path: str | os.PathLike,
    half: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``{model_config, state_dict, sample_rate, stft, versions}`` atomically.

    ``half=True`` stores float16 weights (half the size); they load back as float32. ``extra``:
    further plain-data entries (``int8_static``: fsnet.int8's calibration).
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
        **(extra or {}),
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
def _allowed_globals() -> list[Any]:
    """What a checkpoint may name beyond torch's plain data (tensors, dicts, lists, numbers, text).

    A Lightning ``.ckpt`` from ``train.py`` needs nothing more: its hyper-parameters, optimiser,
    scheduler, loop and callback states are all plain data. Checkpoints of the original FullSubNet
    trainer hold their ``best_score`` as a numpy scalar, which needs numpy's scalar constructor and
    the numeric dtypes (under numpy 1's name too). None of these runs code chosen by the file.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar
    names = ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
    dtypes = [getattr(np.dtypes, n) for n in names] if hasattr(np, "dtypes") else []
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _refused_global(text: str) -> str:
    """The name torch's weights-only unpickler refused, from its message (or a placeholder)."""
    match = re.search(r"GLOBAL (\S+) was not an allowed", text) or re.search(
        r"but got <class '([^']+)'>", text
    )
    return match.group(1) if match else "an object that is not plain data"


def read_checkpoint(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    *,
    unsafe_trust_checkpoint_code: bool = False,
) -> Any:
    """The contents of a torch checkpoint, read without running code from the file.

    ``torch.load(weights_only=True)`` with the allow-list of :func:`_allowed_globals`: a file that
    pickles anything else (a class, a function to call) is refused with one line naming it, as
    unpickling it would run code of the file's choosing. ``unsafe_trust_checkpoint_code=True``
    unpickles such a file fully: only for a file you wrote yourself.
    """
    path = Path(path)
    if path.is_dir():
        raise FsnetError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise FsnetError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise FsnetError(f"{path} is not a readable torch checkpoint: it is empty")
    try:
        if unsafe_trust_checkpoint_code:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:  # permissions, I/O: the file itself may be fine
        raise FsnetError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise FsnetError(f"{path} is not a torch checkpoint (or it is truncated)") from None
        raise FsnetError(
            f"{path} refused: it holds {_refused_global(str(exc))}, and loading it could run code "
            "from the file (fsnet checkpoints hold plain data only; a file you wrote yourself: "
            "load_model(..., unsafe_trust_checkpoint_code=True))"
        ) from None
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


def _entry(path: Path, mapping: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """``mapping[key]`` if it is a ``kind``; else one line naming the missing or odd entry."""
    if key not in mapping:
        raise FsnetError(f"{path} is {what} without its {key!r} entry (damaged or hand-edited?)")
    if not isinstance(mapping[key], kind):
        raise FsnetError(
            f"{path}: the {key!r} entry of {what} is a {type(mapping[key]).__name__}, "
            f"not a {kind.__name__}"
        )
    return mapping[key]


def _model_parts(
    path: Path, payload: Any, overrides: dict[str, Any]
) -> tuple[ModelConfig, dict[str, Any], str | None]:
    """``(config, state dict in fsnet's layout, stored norm or None)`` of a loaded checkpoint."""
    if not isinstance(payload, dict):
        raise FsnetError(f"{path} is not a checkpoint (found {type(payload).__name__})")
    if payload.get("format") == RELEASE_FORMAT:
        what = "an fsnet release file"
        cfg_dict = _entry(path, payload, "model_config", dict, what)
        state_dict = _entry(path, payload, "state_dict", dict, what)
        cfg = ModelConfig.from_dict(_fixed_config(path, cfg_dict, overrides))
        return cfg, state_dict, payload.get("norm")
    if "state_dict" in payload and "hyper_parameters" in payload:
        what = "a Lightning checkpoint"
        hparams = _entry(path, payload, "hyper_parameters", dict, what)
        cfg_dict = _entry(path, hparams, "model_config", dict, f"{what}'s hyper_parameters")
        cfg = ModelConfig.from_dict(_fixed_config(path, dict(cfg_dict), overrides))
        weights = _entry(path, payload, "state_dict", dict, what)
        state_dict = {k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.")}
        return cfg, state_dict, None
    original = payload.get("model", payload)
    if not isinstance(original, dict) or not any(
        str(k).removeprefix("module.").startswith(("encoder.", "decoder_lstm.")) for k in original
    ):
        raise FsnetError(f"{path}: unrecognised checkpoint layout (keys: {list(payload)[:5]})")
    cfg, state_dict = convert_original_state_dict(original, **overrides)
    return cfg, state_dict, None


def _checked_weights(path: Path, state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """float32 copies of the weights; one line naming the first entry that is not a tensor or
    holds NaN/Inf (such a model loads and runs, and writes a file of NaN or of full-scale noise)."""
    checked = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise FsnetError(f"{path}: weight {name!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point():
            value = value.float()
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise FsnetError(
                    f"{path}: weight {name!r} holds {bad} NaN/Inf value(s) of {value.numel()}; "
                    "refusing a model that can only output garbage (a diverged training?)"
                )
        checked[name] = value
    return checked


def load_model(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    unsafe_trust_checkpoint_code: bool = False,
    **overrides: Any,
) -> FastFullSubNet:
    """Load a model in eval mode.

    ``path``: an fsnet release file, a Lightning ``.ckpt`` from ``train.py``, or a checkpoint of
    the original FullSubNet trainer (a dict whose ``model`` entry is the state dict, or the bare
    state dict). None loads the bundled pretrained model. Keyword overrides set config fields
    (and ``norm='utterance'`` reproduces an original checkpoint trained with offline norm).

    The file is read as plain data (:func:`read_checkpoint`): one that pickles code is refused
    unless ``unsafe_trust_checkpoint_code=True``. Weights holding NaN/Inf are refused.
    """
    path = Path(path) if path is not None else BUNDLED_RELEASE
    if not path.exists() and path == BUNDLED_RELEASE:
        raise FsnetError(f"no bundled pretrained model at {path}; pass a checkpoint path")
    payload = read_checkpoint(path, unsafe_trust_checkpoint_code=unsafe_trust_checkpoint_code)
    norm = overrides.pop("norm", None)
    cfg, state_dict, stored_norm = _model_parts(path, payload, overrides)
    model = FastFullSubNet(cfg, norm=norm or stored_norm or "cumulative")
    try:
        model.load_state_dict(_checked_weights(path, state_dict), strict=True)
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
