"""CPU streaming cost of fsnet's precisions, in one run: fp32, static int8 (fsnet.int8), dynamic
int8 (fsnet.quantize) and ONNX Runtime's dynamic-int8 graphs (fsnet.onnx_export), each engine
fed 256-sample calls over the same files, interleaved file by file, timed in process CPU time
(what the process itself used, so other load on a shared machine counts less than in wall time).

    python benchmarks/cpu_int8.py --int8-release int8.pt [--testset DIR] [--max-files N]

``--int8-release`` is a release made by ``python -m fsnet.quantize`` (its fp32 weights serve the
other paths too); without it, the bundled release (which carries its int8 calibration). A release
without a calibration is calibrated on the demo set first (minutes). ``engines`` is also what
benchmarks/cpu_peers.py measures.
Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fsnet
from fsnet.audio import load_audio
from fsnet.checkpoint import BUNDLED_RELEASE
from fsnet.int8 import quantize_static
from fsnet.quantize import (
    DEFAULT_CALIBRATION,
    calibration_files,
    quantize_int8,
    release_calibration,
)
from fsnet.streaming import enhance_in_blocks


def engines(
    release: str | None, threads: int, tmp: str, onnx: bool = True
) -> dict[str, fsnet.StreamingEnhancer]:
    """``{name: engine}`` of every path measured, from the release file ``release`` (None: the
    bundled one); ONNX when ``onnx`` and onnxruntime is installed (graphs written under ``tmp``)."""
    model = fsnet.load_model(release)
    calibration = release_calibration(model, release or BUNDLED_RELEASE, print)
    out = {
        "fp32": fsnet.StreamingEnhancer(model),
        "static int8 (fsnet.int8)": fsnet.StreamingEnhancer(quantize_static(model, calibration)),
        "dynamic int8 (fsnet.quantize)": fsnet.StreamingEnhancer(quantize_int8(model)),
    }
    if not onnx:
        return out
    try:
        from fsnet.onnx_export import OnnxStreamingEnhancer, export_onnx

        export_onnx(model, tmp, int8=True)
        out["ONNX Runtime dynamic int8"] = OnnxStreamingEnhancer(
            tmp, int8=True, num_threads=threads, model=model
        )
    except ImportError:
        print("onnxruntime not installed: ONNX path skipped")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--int8-release",
        default=None,
        help="release from python -m fsnet.quantize; default: the bundled one",
    )
    parser.add_argument("--testset", default=str(DEFAULT_CALIBRATION), help="folder of audio")
    parser.add_argument("--max-files", type=int, default=20, help="files to stream (sorted)")
    parser.add_argument("--threads", type=int, default=1, help="torch / ORT intra-op threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = calibration_files(args.testset)[: args.max_files]
    signals = [load_audio(f)[0] for f in files]
    with tempfile.TemporaryDirectory(prefix="fsnet_onnx_") as tmp:
        paths = engines(args.int8_release, args.threads, tmp)
        calls_ms: dict[str, list[float]] = {name: [] for name in paths}
        for engine in paths.values():  # warm-up: allocator, weight packing, ORT sessions
            enhance_in_blocks(engine, signals[0][:16000], 256)
        for x in signals:
            for name, engine in paths.items():
                calls_ms[name] += call_times_ms(engine, x, 256)
    audio_seconds = sum(len(x) for x in signals) / 16000
    rows = {
        name: {
            "rtf": sum(ms) / 1e3 / audio_seconds,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
        for name, ms in calls_ms.items()
    }
    print(
        f"{len(signals)} files, {audio_seconds:.1f} s of audio, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    print("| path (256-sample calls) | RTF (process CPU) | vs fp32 | call p50 ms | call p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        ratio = row["rtf"] / rows["fp32"]["rtf"]
        print(
            f"| {name} | {row['rtf']:.3f} | {ratio:.2f}x | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"audio_seconds": audio_seconds, "rows": rows}))


def call_times_ms(engine: fsnet.StreamingEnhancer, x: np.ndarray, block: int) -> list[float]:
    """Process CPU milliseconds of each ``engine.process`` call over ``x`` (and of the flush)."""
    times = []
    for start in range(0, len(x), block):
        t0 = time.process_time()
        engine.process(x[start : start + block])
        times.append(1e3 * (time.process_time() - t0))
    t0 = time.process_time()
    engine.flush()
    times.append(1e3 * (time.process_time() - t0))
    return times


if __name__ == "__main__":
    main()
