"""GPU multi-stream serving: B independent real-time streams in one batched engine.

    python benchmarks/gpu_streams.py --streams 1024 4096 10240 --precision bf16

Each hop feeds a [B, hop] block that already lives on the GPU (no host round trip) through the
whole engine: STFT, mel, norm, network step, mask, inverse STFT and overlap-add. Reports per-hop
wall time (p50 / p99 / max, synchronised), whether p99 stays under the hop, and GPU memory per
stream. Not a test.
"""

from __future__ import annotations

import argparse
import json

import torch

import fsnet

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def run(model, streams: int, hops: int, dtype, cuda_graphs: bool, groups: int) -> dict:
    hop = model.config.hop_samples
    hop_ms_budget = 1e3 * hop / model.config.sample_rate
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    # Streams are served in `groups` engines that started one hop apart, so that each hop only
    # one group steps the sub-band model (with groups == shrink_size the load is even).
    per_group = -(-streams // groups)
    engines = [
        fsnet.StreamingEnhancer(
            model, num_streams=per_group, autocast_dtype=dtype, cuda_graphs=cuda_graphs
        )
        for _ in range(groups)
    ]
    blocks = torch.randn(8, per_group, hop, device="cuda") * 0.1
    for g, engine in enumerate(engines):
        for _ in range(g):
            engine.process(blocks[0])
    times, sub_band_times = [], []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(hops + 20):
        torch.cuda.synchronize()
        start.record()
        for engine in engines:
            engine.process(blocks[i % 8])
        stop.record()
        stop.synchronize()
        if i >= 20:  # warm-up: allocator, cuDNN plans
            ms = start.elapsed_time(stop)
            times.append(ms)
            if model.runs_subband(engines[0]._state["frames"] - 1):  # the frame just done
                sub_band_times.append(ms)
    times_t = torch.tensor(times)
    peak = torch.cuda.max_memory_allocated() - base
    return {
        "streams": per_group * groups,
        "groups": groups,
        "hop_ms_p50": float(times_t.median()),
        "hop_ms_p99": float(times_t.quantile(0.99)),
        "hop_ms_max": float(times_t.max()),
        "subband_hop_ms_p50": float(torch.tensor(sub_band_times).median()),
        "real_time": bool(times_t.quantile(0.99) < hop_ms_budget),
        "gpu_mib_per_stream": peak / streams / 2**20,
    }


def check_graphs_match_eager(model, dtype) -> None:
    """The graphed engine must compute what the eager one does (and both what offline does)."""
    x = torch.randn(8, 16000 * 3, device="cuda") * 0.1
    outs = []
    for graphs in (False, True):
        engine = fsnet.StreamingEnhancer(
            model, num_streams=8, autocast_dtype=dtype, cuda_graphs=graphs
        )
        pieces = [engine.process(x[:, i : i + 1000]) for i in range(0, x.shape[1], 1000)]
        outs.append(torch.cat(pieces + [engine.flush()], dim=1))
    offline = torch.stack([torch.as_tensor(fsnet.enhance(model, xi)) for xi in x])
    latency = model.config.latency_samples
    print(
        json.dumps(
            {
                "check": "graphs_vs_eager",
                "precision": str(dtype),
                "max_abs_diff_graphs_vs_eager": float((outs[0] - outs[1]).abs().max()),
                "max_abs_diff_stream_vs_offline_fp32": float(
                    (outs[0][:, latency:] - offline).abs().max()
                ),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--streams", type=int, nargs="+", default=[1024, 4096, 8192, 10240, 16384])
    parser.add_argument("--hops", type=int, default=200)
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--groups", type=int, default=1, help="engines started one hop apart")
    parser.add_argument(
        "--no-graphs", action="store_true", help="eager hops instead of CUDA graphs"
    )
    parser.add_argument(
        "--check", action="store_true", help="first check graphs == eager on 8 streams"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA GPU (none found)")
    torch.backends.cudnn.benchmark = True
    model = (
        (fsnet.load_model(args.checkpoint) if args.checkpoint else fsnet.build_model())
        .cuda()
        .eval()
    )
    if args.check:
        check_graphs_match_eager(model, DTYPES[args.precision])
    for streams in args.streams:
        try:
            result = run(
                model, streams, args.hops, DTYPES[args.precision], not args.no_graphs, args.groups
            )
        except torch.OutOfMemoryError:
            result = {"streams": streams, "error": "out of memory"}
        result.update(
            precision=args.precision,
            cuda_graphs=not args.no_graphs,
            device=torch.cuda.get_device_name(),
        )
        print(json.dumps(result), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
