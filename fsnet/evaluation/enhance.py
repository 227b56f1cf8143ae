"""The enhancement step of an evaluation: load the model, run every noisy file through the chosen
engines (timed, for the real-time factor) and keep the results in memory for scoring.

Enhancement runs in the main process; only what it measures is the real-time factor.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fsnet.audio import SAMPLE_RATE, ClippedOutputWarning, load_audio, write_audio
from fsnet.cli import StopSignals
from fsnet.errors import FsnetError
from fsnet.evaluation.options import Options
from fsnet.evaluation.testset import Item

Notice = Callable[[str], None]


def load_model(opts: Options, notice: Notice | None = None):
    """The model to evaluate, on ``opts.device`` (int8-quantized for ``precision=int8*``), with
    ``num_parameters`` counted before quantization hides them."""
    import torch

    from fsnet.checkpoint import load_model as load_checkpoint

    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise FsnetError(f"device={opts.device} but CUDA is not available here; use device=cpu")
    overrides = {"norm": opts.norm} if opts.norm else {}
    model = load_checkpoint(opts.checkpoint, device=opts.device, **overrides)
    if model.config.sample_rate != SAMPLE_RATE:
        # the test set is read, and PESQ/STOI/DNSMOS scored, at 16 kHz
        raise FsnetError(
            f"{opts.checkpoint} is a {model.config.sample_rate} Hz model; evaluate.py scores "
            f"{SAMPLE_RATE} Hz models"
        )
    model.num_parameters = sum(p.numel() for p in model.parameters())
    if opts.precision == "int8-dynamic":
        from fsnet.quantize import quantize_int8

        model = quantize_int8(model)
    elif opts.precision == "int8":
        num_parameters = model.num_parameters
        model = _static_int8(model, opts, notice or (lambda _msg: None))
        model.num_parameters = num_parameters
    return model


def _static_int8(model, opts: Options, notice: Notice):
    """fsnet.int8's model with the checkpoint's stored calibration; a checkpoint without one
    is calibrated here on the demo set's noisy files (the default of python -m fsnet.quantize)."""
    from fsnet.checkpoint import BUNDLED_RELEASE
    from fsnet.int8 import quantize_static
    from fsnet.quantize import release_calibration

    calibration = release_calibration(model, opts.checkpoint or BUNDLED_RELEASE, notice)
    return quantize_static(model, calibration)


def _streaming_engine(model, opts: Options):
    """The engine of ``mode=streaming``: fsnet's StreamingEnhancer, or for ``precision=onnx*``
    ONNX Runtime running the exported network step (offline mode keeps the PyTorch model)."""
    import torch

    from fsnet.streaming import StreamingEnhancer

    if not opts.precision.startswith("onnx"):
        return StreamingEnhancer(
            model,
            autocast_dtype=torch.bfloat16 if opts.precision == "bf16" else None,
            cuda_graphs=opts.device.startswith("cuda"),
            shaping=opts.shaping,
        )
    from fsnet.onnx_export import OnnxStreamingEnhancer, export_onnx

    int8 = opts.precision == "onnx-int8"
    with tempfile.TemporaryDirectory(prefix="fsnet_onnx_") as onnx_dir:
        export_onnx(model, onnx_dir, int8=int8)
        return OnnxStreamingEnhancer(
            onnx_dir,
            int8=int8,
            num_threads=opts.num_threads or os.cpu_count() or 1,
            model=model,
            shaping=opts.shaping,
        )


def enhancers(model, opts: Options) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """``{mode: x -> enhanced x}`` for each mode of ``opts``; the output is aligned with the
    input sample for sample (the stream's latency dropped by the streaming engine's helper)."""
    import torch

    import fsnet
    from fsnet.streaming import enhance_in_blocks

    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if "offline" in opts.modes:
        device_type, bf16 = opts.device.split(":")[0], opts.precision == "bf16"

        def offline(x: np.ndarray) -> np.ndarray:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                return fsnet.enhance(model, x, shaping=opts.shaping)

        out["offline"] = offline
    if "streaming" in opts.modes:
        engine = _streaming_engine(model, opts)
        out["streaming"] = lambda x: enhance_in_blocks(engine, x, opts.stream_block_samples)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@dataclass
class Enhanced:
    """What the enhancement step produced, per file (index of the test set's items)."""

    noisy: list[np.ndarray] = field(default_factory=list)
    clean: list[np.ndarray | None] = field(default_factory=list)  # cut to the noisy length
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # mode -> enhanced
    seconds: dict[str, list[float]] = field(default_factory=dict)  # mode -> enhancement time
    sample_diffs: list[float] = field(default_factory=list)  # mode=both: largest |offline - stream|

    @property
    def samples(self) -> list[int]:
        return [x.shape[0] for x in self.noisy]


def check_finite(y: np.ndarray, item: Item, mode: str) -> None:
    """Refuse to keep an enhancement with NaN or infinite samples (a model with broken weights):
    written as audio it would be a file of silence or full-scale noise that looks like a result."""
    if not np.isfinite(y).all():
        bad = int(y.size - np.count_nonzero(np.isfinite(y)))
        raise FsnetError(
            f"{item.where(item.name)}: the model's {mode} output has {bad} non-finite sample(s) "
            "(NaN/inf); the model is broken (check its weights), nothing was written for it"
        )


def _save(path: Path, y: np.ndarray, notice: Notice) -> None:
    """Write an enhanced file; its clipping (if any) becomes a notice of the run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ClippedOutputWarning)
        write_audio(path, y, SAMPLE_RATE)
    for warning in caught:
        if issubclass(warning.category, ClippedOutputWarning):
            notice(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def load_pair(item: Item, paired: bool, notice: Notice) -> tuple[np.ndarray, np.ndarray | None]:
    """The item's noisy input and clean reference (cut to the input's length, with a notice)."""
    x, notes = load_audio(item.noisy, SAMPLE_RATE)
    for note in notes:
        notice(item.where(f"noisy/{note}" if paired else note))
    if item.clean is None:
        return x, None
    ref, notes = load_audio(item.clean, SAMPLE_RATE)
    for note in notes:
        notice(item.where(f"clean/{note}"))
    if ref.shape[0] != x.shape[0]:
        n = min(ref.shape[0], x.shape[0])
        notice(
            item.where(
                f"{item.noisy.name} and {item.clean.name} differ in length ({x.shape[0]} "
                f"vs {ref.shape[0]} samples); metrics use the first {n}"
            )
        )
        ref = ref[:n]
    return x, ref


def enhance_all(
    items: list[Item],
    paired: bool,
    run: dict[str, Callable[[np.ndarray], np.ndarray]],
    opts: Options,
    notice: Notice,
    stop: StopSignals,
    save_dirs: dict[str, Path] | None = None,
    save_names: list[str] | None = None,
) -> Enhanced:
    """Enhance every item with every engine of ``run`` (timed after a warm-up), writing item
    ``i``'s result as ``save_dirs[mode] / save_names[i]`` when ``save_dirs`` is given.

    A stop signal ends it between files (:class:`fsnet.cli.Stopped`): every file written is
    complete.
    """
    from tqdm import tqdm

    # Warm-up outside the timing: first calls pay for lazy initialisation.
    warm = np.zeros(SAMPLE_RATE // 2, np.float32)
    for enhance in run.values():
        enhance(warm)
    _sync(opts.device)
    out = Enhanced(outputs={m: [] for m in run}, seconds={m: [] for m in run})
    bar = tqdm(items, desc="enhance", unit="file", disable=not opts.progress, file=sys.stderr)
    with contextlib.closing(bar):
        for index, item in enumerate(bar):
            stop.check()
            x, ref = load_pair(item, paired, notice)
            for mode, enhance in run.items():
                t0 = time.perf_counter()
                y = enhance(x)
                _sync(opts.device)
                out.seconds[mode].append(time.perf_counter() - t0)
                y = np.asarray(y, dtype=np.float32)
                check_finite(y, item, mode)
                out.outputs[mode].append(y)
                if save_dirs is not None:
                    _save(save_dirs[mode] / save_names[index], y, notice)
            if len(run) == 2:
                diff = np.abs(out.outputs["offline"][-1] - out.outputs["streaming"][-1])
                out.sample_diffs.append(float(diff.max()))
            out.noisy.append(x)
            out.clean.append(ref)
    return out
