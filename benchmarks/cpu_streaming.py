"""CPU streaming benchmark: compute time per call and RTF of the streaming engine fed one hop
per call (16 ms) and four hops per call (64 ms), of the file path (the engine fed
``--file-block-seconds`` per call, as ``stream_infer.py --input``), of the chunked ``fsnet.enhance``
and of the whole-signal offline forward, all with the same model in the same run.

    python benchmarks/cpu_streaming.py --threads 1 --seconds 20 [--int8] [--onnx] [--clock cpu]

``--onnx`` streams through ONNX Runtime (fsnet.onnx_export; with ``--int8``, its int8 graphs);
the offline column is always the PyTorch forward of the same weights (int8 with ``--int8``).

``--clock cpu`` times with the process's CPU time instead of the wall clock: on a shared machine
whose other jobs preempt this one, it compares the paths' own cost (cache contention still counts).

Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import fsnet
from fsnet.streaming import enhance_in_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio length to stream")
    parser.add_argument(
        "--checkpoint", default=None, help="release file; default: random paper-size weights"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats of the whole-file paths (best taken)"
    )
    parser.add_argument("--int8", action="store_true", help="dynamic-int8 weights (fsnet.quantize)")
    parser.add_argument(
        "--onnx", action="store_true", help="network step in ONNX Runtime (fsnet.onnx_export)"
    )
    parser.add_argument(
        "--file-block-seconds",
        type=float,
        default=1.0,
        help="audio per engine call on the file path (seconds)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (robust to preemption on a shared machine)",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = fsnet.load_model(args.checkpoint) if args.checkpoint else fsnet.build_model().eval()
    engine = None
    if args.onnx:
        import tempfile

        from fsnet.onnx_export import OnnxStreamingEnhancer, export_onnx

        with tempfile.TemporaryDirectory(prefix="fsnet_onnx_") as onnx_dir:
            export_onnx(model, onnx_dir, int8=args.int8)
            engine = OnnxStreamingEnhancer(
                onnx_dir, int8=args.int8, num_threads=args.threads, model=model
            )
    if args.int8:
        from fsnet.quantize import quantize_int8

        model = quantize_int8(model)
    rate = model.config.sample_rate
    hop = model.config.hop_samples
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(int(args.seconds * rate))).astype(np.float32)
    audio_seconds = len(x) / rate

    engine = engine or fsnet.StreamingEnhancer(model)
    # Warm-up: the allocator, and the weight packs of each path (a long chunk runs the sequence
    # kernels, one hop and four hops the cells), packed once on a path's first call (~50 ms).
    for block in (50 * hop, hop, hop, 4 * hop, 4 * hop):
        engine.process(x[:block])
    engine.reset()
    calls = {
        name: call_times(engine, x, hops * hop, clock)
        for name, hops in (("one_hop", 1), ("four_hop", 4))
    }
    file_block = int(args.file_block_seconds * rate)
    file_s = best_time(lambda: enhance_in_blocks(engine, x, file_block), args.repeats, clock)

    fsnet.enhance(model, x[:rate])  # warm-up
    chunked_s = best_time(lambda: fsnet.enhance(model, x), args.repeats, clock)
    offline_s = best_time(lambda: fsnet.enhance(model, x, chunk_seconds=None), args.repeats, clock)

    offline_rtf = offline_s / audio_seconds
    rows = {
        f"{name.replace('_', '-')} calls ({hops * hop} samples)": (ms, ms.sum() / 1e3)
        for (name, ms), hops in zip(calls.items(), (1, 4), strict=True)
    }
    rows[f"file path ({file_block} samples per call)"] = (None, file_s)
    rows["fsnet.enhance (chunked)"] = (None, chunked_s)
    rows["offline forward (whole signal)"] = (None, offline_s)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)",
        "torch": str(torch.__version__),
        "engine": "onnxruntime" if args.onnx else "torch",
        "weights": "int8" if args.int8 else "fp32",
        "audio_seconds": audio_seconds,
        "clock": args.clock,
        "rows": {},
    }
    print("| path | call p50 ms | call p99 ms | call max ms | RTF | vs offline forward |")
    print("|---|---|---|---|---|---|")
    for name, (ms, seconds) in rows.items():
        rtf = seconds / audio_seconds
        row = {"rtf": rtf, "over_offline": rtf / offline_rtf}
        cells = ["", "", ""]
        if ms is not None:
            row.update(p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)))
            row["max_ms"] = float(ms.max())
            cells = [f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", f"{row['max_ms']:.2f}"]
        result["rows"][name] = row
        print(f"| {name} | {' | '.join(cells)} | {rtf:.3f} | {row['over_offline']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def call_times(engine, x: np.ndarray, block: int, clock=time.perf_counter) -> np.ndarray:
    """Milliseconds of each ``engine.process`` call over ``x`` in ``block``-sample calls."""
    times_ms = []
    for start in range(0, len(x) - block + 1, block):
        t0 = clock()
        engine.process(x[start : start + block])
        times_ms.append(1e3 * (clock() - t0))
    engine.flush()
    return np.asarray(times_ms)


def best_time(work, repeats: int, clock=time.perf_counter) -> float:
    """Seconds of the fastest of ``repeats`` runs of ``work()``."""
    seconds = []
    for _ in range(repeats):
        t0 = clock()
        work()
        seconds.append(clock() - t0)
    return min(seconds)


if __name__ == "__main__":
    main()
