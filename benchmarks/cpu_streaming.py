"""CPU streaming benchmark: per-hop compute time and RTF of the frame-wise engine, next to the
offline forward of the same model in the same run.

    python benchmarks/cpu_streaming.py --threads 1 --seconds 20 [--int8] [--onnx]

``--onnx`` streams through ONNX Runtime (fsnet.onnx_export; with ``--int8``, its int8 graphs);
the offline column is always the PyTorch forward of the same weights (int8 with ``--int8``).

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


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio length to stream")
    parser.add_argument(
        "--checkpoint", default=None, help="release file; default: random paper-size weights"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="offline forward repeats (best taken)"
    )
    parser.add_argument("--int8", action="store_true", help="dynamic-int8 weights (fsnet.quantize)")
    parser.add_argument(
        "--onnx", action="store_true", help="network step in ONNX Runtime (fsnet.onnx_export)"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

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
    engine.process(x[: 50 * hop])  # warm-up: allocator, weight packing
    engine.reset()
    hop_ms = []
    for start in range(0, len(x) - hop + 1, hop):
        t0 = time.perf_counter()
        engine.process(x[start : start + hop])
        hop_ms.append(1e3 * (time.perf_counter() - t0))
    engine.flush()
    hop_ms = np.asarray(hop_ms)

    fsnet.enhance(model, x[:rate])  # warm-up
    offline_s = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fsnet.enhance(model, x)
        offline_s.append(time.perf_counter() - t0)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)",
        "torch": str(torch.__version__),
        "engine": "onnxruntime" if args.onnx else "torch",
        "audio_seconds": audio_seconds,
        "hop_ms": 1e3 * hop / rate,
        "stream_hop_compute_ms": {
            "mean": float(hop_ms.mean()),
            "p50": float(np.percentile(hop_ms, 50)),
            "p99": float(np.percentile(hop_ms, 99)),
            "max": float(hop_ms.max()),
        },
        "stream_rtf": float(hop_ms.sum() / 1e3 / audio_seconds),
        "offline_rtf": float(min(offline_s) / audio_seconds),
    }
    result["stream_over_offline"] = result["stream_rtf"] / result["offline_rtf"]
    h = result["stream_hop_compute_ms"]
    print(
        "| weights | hop p50 ms | hop p99 ms | hop max ms | streaming RTF | offline RTF | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {'onnx ' if args.onnx else ''}{'int8' if args.int8 else 'fp32'} | {h['p50']:.2f} | {h['p99']:.2f} | {h['max']:.2f} | "
        f"{result['stream_rtf']:.3f} | {result['offline_rtf']:.3f} | {result['stream_over_offline']:.2f}x |"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
