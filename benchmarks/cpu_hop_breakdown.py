"""Where one streaming hop's CPU time goes, next to the offline forward's time per frame.

    python benchmarks/cpu_hop_breakdown.py --threads 1 [--checkpoint fsnet/pretrained/...pt]
        [--block-hops 4]

Profiles calls of the paper-size model (torch.profiler, self CPU time per op, grouped), each
bringing ``--block-hops`` hops (4: a 1024-sample device block, run as one chunk), and times
the floor that batch-1 streaming cannot go under: reading every full-band weight matrix once per
hop (the same GEMVs, alone in a loop). Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import fsnet

GROUPS = (
    (
        "oneDNN GEMMs (sub-band LSTM over 64 bands; a chunk's input projections)",
        ("mkldnn::_linear_pointwise",),
    ),
    (
        "MKL GEMMs (full-band LSTM cells at batch 1, output projections)",
        ("aten::addmm", "aten::mm"),
    ),
    ("STFT / iSTFT", ("aten::_fft_r2c", "aten::_fft_c2r")),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="release file; default: random weights")
    parser.add_argument("--hops", type=int, default=400, help="calls timed and profiled")
    parser.add_argument("--block-hops", type=int, default=1, help="hops each call brings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = fsnet.load_model(args.checkpoint) if args.checkpoint else fsnet.build_model().eval()
    hop, rate = model.config.hop_samples, model.config.sample_rate
    block = args.block_hops * hop
    x = (0.1 * np.random.default_rng(0).standard_normal(block * args.hops + 100 * hop)).astype(
        np.float32
    )

    def calls():
        for i in range(args.hops):
            engine.process(x[100 * hop + i * block : 100 * hop + (i + 1) * block])

    engine = fsnet.StreamingEnhancer(model)
    for warm_up in (100 * hop, block, block):  # the allocator, the weight packs
        engine.process(x[:warm_up])
    engine.reset()
    engine.process(x[: 100 * hop])
    t0 = time.perf_counter()
    calls()
    hop_ms = 1e3 * (time.perf_counter() - t0) / args.hops

    engine.reset()
    engine.process(x[: 100 * hop])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        calls()
    self_ms = {e.key: e.self_cpu_time_total / 1e3 / args.hops for e in prof.key_averages()}
    profiled = sum(self_ms.values())

    fsnet.enhance(model, x[:rate])
    t0 = time.perf_counter()
    fsnet.enhance(model, x)
    offline_ms = 1e3 * (time.perf_counter() - t0) / (len(x) // hop) * args.block_hops

    # The floor: each full-band weight matrix read once at batch 1 (what every hop must do).
    mats = []
    for stack in (model.encoder, model.decoder):
        for layer in stack:
            w_ih, w_hh, b_ih, _ = layer._layer_weights(0)
            mats.append((torch.cat((w_ih, w_hh), 1), b_ih))
            if layer.proj is not None:
                mats.append((layer.proj.weight, layer.proj.bias))
    inputs = [torch.randn(1, w.shape[1]) for w, _ in mats]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w.detach(), 1) for w, _ in mats]

    def read_all_mkl():
        return [torch.addmm(b, v, w.t()) for (w, b), v in zip(mats, inputs, strict=True)]

    def read_all_packed():
        return [
            torch.ops.mkldnn._linear_pointwise(v, p, b, "none", [], "")
            for (_, b), v, p in zip(mats, inputs, packed, strict=True)
        ]

    floor_ms = float("inf")
    with torch.inference_mode():
        for read_all in (read_all_mkl, read_all_packed):  # the faster kernel sets the floor
            for _ in range(50):
                read_all()
            t0 = time.perf_counter()
            for _ in range(500):
                read_all()
            floor_ms = min(floor_ms, 1e3 * (time.perf_counter() - t0) / 500)
    weight_mb = sum(w.numel() for w, _ in mats) * 4 / 1e6

    print(f"| part | ms per call ({1e3 * block / rate:g} ms of audio) |\n|---|---|")
    print(f"| streaming call, wall (no profiler) | {hop_ms:.2f} |")
    rest = profiled
    for name, ops in GROUPS:
        ms = sum(v for k, v in self_ms.items() if k in ops)
        rest -= ms
        print(f"| - {name} | {ms:.2f} |")
    print(f"| - other ops (norm, mel, pointwise, copies) | {rest:.2f} |")
    print(f"| - Python and dispatch (wall minus profiled ops) | {max(hop_ms - profiled, 0):.2f} |")
    print(f"| full-band weights ({weight_mb:.1f} MB) read once, GEMVs alone | {floor_ms:.2f} |")
    print(f"| offline forward, for the call's {args.block_hops} frame(s) | {offline_ms:.2f} |")
    print(
        f"\nstreaming / offline = {hop_ms / offline_ms:.2f}x; the GEMV floor alone is "
        f"{floor_ms / offline_ms:.2f}x the offline time of those frames"
    )


if __name__ == "__main__":
    main()
