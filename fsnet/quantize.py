"""int8 for the CPU: dynamic quantization, and the command that makes a static-int8 release.

``python -m fsnet.quantize [--calibrate DIR] in.pt out.pt`` calibrates fsnet.int8's activation
scales on a few minutes of audio and stores them with the weights (plain data).

Streaming at batch 1 reads every weight matrix once per hop; int8 weights read a quarter of
the bytes and use the VNNI int8 kernels (fbgemm/x86), so a hop costs about half as much. The
quantized model is the same FastFullSubNet with its LSTM and Linear submodules swapped for
PyTorch's dynamic-quantized ones: ``forward``, ``step`` and the streaming engine run unchanged.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fsnet.audio import AUDIO_EXTENSIONS, load_audio
from fsnet.errors import FsnetError
from fsnet.model import FastFullSubNet


def quantize_int8(model: FastFullSubNet) -> FastFullSubNet:
    """A CPU copy of ``model`` with int8 weights (activations quantized on the fly, per call).

    The original model is left untouched. Measure quality on your data before shipping it:
    ``python evaluate.py precision=int8-dynamic testset=<dir>`` scores it next to the noisy input.
    """
    quantized = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao's eager quantization prints a migration notice; it is still the supported
        # dynamic-int8 path for nn.LSTM in torch 2.11.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(
            quantized, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return quantized


DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "assets" / "demo_testset" / "noisy"


def calibration_files(folder: str | os.PathLike) -> list[Path]:
    """The audio files under ``folder`` (sorted, recursive); FsnetError when the folder is
    missing or holds no audio."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FsnetError(f"calibration folder {folder} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise FsnetError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder}")
    return files


def calibration_signals(files: list[Path], max_seconds: float, sample_rate: int):
    """``files`` as 1-D float32 signals at ``sample_rate``, until ``max_seconds`` of audio."""
    budget = int(max_seconds * sample_rate)
    for path in files:
        if budget <= 0:
            return
        x, _notes = load_audio(path, sample_rate)
        x = x[:budget]
        budget -= len(x)
        yield x


def release_calibration(model: FastFullSubNet, path, notice=None) -> dict:
    """The static-int8 calibration stored in the release ``path``; a release without one is
    calibrated here on the demo set's noisy files (this command's default), and ``notice``
    (a one-argument callable, if given) is told so."""
    from fsnet.int8 import calibrate, stored_calibration

    calibration = stored_calibration(path)
    if calibration is not None:
        return calibration
    if notice is not None:
        notice(
            f"{path} holds no int8 calibration: calibrating on {DEFAULT_CALIBRATION} (make a "
            "calibrated release once with python -m fsnet.quantize --calibrate <audio folder>)"
        )
    files = calibration_files(DEFAULT_CALIBRATION)
    signals = calibration_signals(files, 300.0, model.config.sample_rate)
    return calibrate(model, signals, source=str(DEFAULT_CALIBRATION))


def main(argv: list[str] | None = None) -> int:
    """``python -m fsnet.quantize [--calibrate DIR] SRC DST``: an fp32 checkpoint -> an int8
    release (the fp32 weights plus the calibrated activation scales of fsnet.int8)."""
    import argparse

    from fsnet.checkpoint import load_model, save_release
    from fsnet.cli import run
    from fsnet.int8 import INT8_ENTRY, calibrate, quantize_static

    parser = argparse.ArgumentParser(
        prog="python -m fsnet.quantize",
        description="Calibrate static int8 activation scales on audio and write an int8 release "
        "file (loads as fp32 with fsnet.load_model, as int8 with fsnet.int8.load_int8_model).",
    )
    parser.add_argument("source", help="fp32 checkpoint (release file or Lightning .ckpt)")
    parser.add_argument("destination", help="int8 release file to write (atomically)")
    parser.add_argument(
        "--calibrate",
        default=str(DEFAULT_CALIBRATION),
        help="folder of audio (searched recursively) to calibrate on; default: the demo set's "
        "noisy files (use training audio when you have it)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="audio to calibrate on, at most (s)"
    )
    parser.add_argument(
        "--half", action="store_true", help="store float16 weights (as the bundled model does)"
    )
    args = parser.parse_args(argv)

    def work() -> int:
        destination = Path(args.destination)
        if destination.is_dir():
            raise FsnetError(f"destination {destination} is a directory; give a file name")
        if destination.exists() and Path(args.source).exists():
            if os.path.samefile(args.source, destination):
                raise FsnetError("destination is the source checkpoint; write to a new name")
        if not args.max_seconds > 0:
            raise FsnetError(f"--max-seconds must be > 0, got {args.max_seconds}")
        files = calibration_files(args.calibrate)
        model = load_model(args.source)
        signals = calibration_signals(files, args.max_seconds, model.config.sample_rate)
        calibration = calibrate(model, signals, source=str(args.calibrate))
        quantize_static(model, calibration)  # refuses a model static int8 cannot run
        try:
            save_release(model, destination, half=args.half, extra={INT8_ENTRY: calibration})
        except OSError as exc:
            raise FsnetError(f"cannot write {destination}: {exc.strerror or exc}") from None
        print(
            f"wrote {destination} (int8 scales from {calibration['seconds']:.1f} s of audio "
            f"under {args.calibrate})"
        )
        return 0

    return run(work)


if __name__ == "__main__":
    raise SystemExit(main())
