"""Where one streaming hop's CPU time goes, next to the arithmetic floor of this core.

    python benchmarks/cpu_hop_breakdown.py --threads 1 [--checkpoint fsnet/pretrained/...pt]
        [--int8] [--block-hops 1]

Profiles calls of the paper-size model (torch.profiler, self CPU time per op, grouped), each
bringing ``--block-hops`` hops (1: single 256-sample calls), and prints the wall time per call
(mean, p50, p99; hops that step the sub-band model apart from those that do not) next to:

- the arithmetic floor: the hop's multiply-accumulates over this core's GEMM peak (measured here
  on large square matrices: ``torch._int_mm`` for int8, the faster of MKL and oneDNN for fp32);
- the memory floor of batch-1 streaming: reading every full-band weight matrix once per hop
  (the same GEMVs, alone in a loop).

``--int8`` runs the static-int8 model (fsnet.int8; the release needs its ``int8_static``
calibration, as the bundled one has). Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import train_speed  # its FLOP count: one rule for every benchmark
from torch.profiler import ProfilerActivity, profile

import fsnet
from fsnet.checkpoint import BUNDLED_RELEASE
from fsnet.config import ModelConfig
from fsnet.int8 import load_int8_model

GROUPS = (
    ("int8 GEMMs (torch._int_mm)", ("aten::_int_mm",)),
    (
        "oneDNN fp32 GEMMs (sub-band LSTM over 64 bands; a chunk's input projections)",
        ("mkldnn::_linear_pointwise",),
    ),
    ("MKL fp32 GEMMs (full-band cells at batch 1, projections)", ("aten::addmm", "aten::mm")),
    ("STFT / iSTFT", ("aten::_fft_r2c", "aten::_fft_c2r")),
)
PEAK_SIZE = 2048  # square GEMM side for the peak: large enough to run at the kernel's best


def hop_macs(cfg: ModelConfig) -> tuple[float, float]:
    """(MACs of a hop that steps the sub-band model, MACs of one that does not): the recurrent
    layers' gates and projections, the sub-band model over every mel band (train_speed's count,
    FLOP / 2)."""
    m, kind = cfg.num_mels, cfg.rnn_type
    plain = train_speed._fullband_flops(m, cfg.encoder_hidden_sizes, m, kind)
    plain += train_speed._fullband_flops(2 * m, cfg.decoder_hidden_sizes, 2 * cfg.num_freqs, kind)
    subband = train_speed._recurrent_flops(
        cfg.subband_unit_size, cfg.bottleneck_hidden_size, cfg.bottleneck_num_layers, kind
    )
    subband = m * (subband + 2 * cfg.bottleneck_hidden_size)
    return (plain + subband) / 2, plain / 2


def gemm_peaks() -> tuple[float, float]:
    """(int8, fp32) multiply-accumulates per second of one large square GEMM on this thread
    count, best of a few runs."""
    n = PEAK_SIZE
    a8 = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    w8 = torch.randint(-127, 128, (n, n), dtype=torch.int8).t()  # the layout fsnet.int8 keeps
    a, w = torch.randn(n, n), torch.randn(n, n)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, n)
    calls = {
        "int8": [lambda: torch._int_mm(a8, w8)],
        "fp32": [
            lambda: a @ w.t(),
            lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""),
        ],
    }
    peaks = {}
    for kind, fns in calls.items():
        best = float("inf")
        for fn in fns:
            fn()
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
        peaks[kind] = n**3 / best
    return peaks["int8"], peaks["fp32"]


def weight_read_floor_ms(model: fsnet.FastFullSubNet) -> dict[str, tuple[float, float]]:
    """``{kind: (ms to read every full-band weight once at batch 1, its size in MB)}`` for fp32
    (the faster of MKL and oneDNN GEMVs) and int8 (``torch._int_mm``), alone in a loop."""
    mats = []
    for stack in (model.encoder, model.decoder):
        for layer in stack:
            w_ih, w_hh, b_ih, _ = layer._layer_weights(0)
            mats.append((torch.cat((w_ih, w_hh), 1).detach(), b_ih.detach()))
            if layer.proj is not None:
                mats.append((layer.proj.weight.detach(), layer.proj.bias.detach()))
    inputs = [torch.randn(1, w.shape[1]) for w, _ in mats]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w, _ in mats]
    int8 = [(torch.ones(1, w.shape[1], dtype=torch.int8), w.to(torch.int8).t()) for w, _ in mats]

    def read_all_mkl():
        return [torch.addmm(b, v, w.t()) for (w, b), v in zip(mats, inputs, strict=True)]

    def read_all_packed():
        return [
            torch.ops.mkldnn._linear_pointwise(v, p, b, "none", [], "")
            for (_, b), v, p in zip(mats, inputs, packed, strict=True)
        ]

    def read_all_int8():
        return [torch._int_mm(v, w) for v, w in int8]

    def best_ms(*fns) -> float:
        best = float("inf")
        for read_all in fns:  # the faster kernel sets the floor
            for _ in range(50):
                read_all()
            t0 = time.perf_counter()
            for _ in range(500):
                read_all()
            best = min(best, 1e3 * (time.perf_counter() - t0) / 500)
        return best

    size_mb = sum(w.numel() for w, _ in mats) / 1e6
    return {
        "fp32": (best_ms(read_all_mkl, read_all_packed), 4 * size_mb),
        "int8": (best_ms(read_all_int8), size_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="release file; default: random weights")
    parser.add_argument("--int8", action="store_true", help="the static-int8 model (fsnet.int8)")
    parser.add_argument("--hops", type=int, default=1000, help="calls timed and profiled")
    parser.add_argument("--block-hops", type=int, default=1, help="hops each call brings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.int8:
        fp32 = fsnet.load_model(args.checkpoint or BUNDLED_RELEASE)
        model = load_int8_model(args.checkpoint or BUNDLED_RELEASE)
    else:
        model = fsnet.load_model(args.checkpoint) if args.checkpoint else fsnet.build_model()
        fp32 = model.eval()
    hop, rate = model.config.hop_samples, model.config.sample_rate
    block = args.block_hops * hop
    x = (0.1 * np.random.default_rng(0).standard_normal(block * args.hops + 100 * hop)).astype(
        np.float32
    )
    engine = fsnet.StreamingEnhancer(model)

    steps = []  # whether each call's first hop steps the sub-band model

    def calls() -> list[float]:
        times = []
        for i in range(args.hops):
            steps.append(model.runs_subband(engine._state["frames"]))
            t0 = time.perf_counter()
            engine.process(x[100 * hop + i * block : 100 * hop + (i + 1) * block])
            times.append(1e3 * (time.perf_counter() - t0))
        return times

    for warm_up in (100 * hop, block, block):  # the allocator, the weight packs
        engine.process(x[:warm_up])
    engine.reset()
    engine.process(x[: 100 * hop])  # 100 frames: the next call's first hop steps the sub-band
    call_ms = np.array(calls())
    engine.reset()
    engine.process(x[: 100 * hop])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        calls()
    self_ms = {e.key: e.self_cpu_time_total / 1e3 / args.hops for e in prof.key_averages()}
    profiled = sum(self_ms.values())

    with torch.inference_mode():
        fsnet.enhance(model, x[:rate])
        t0 = time.perf_counter()
        fsnet.enhance(model, x)
        offline_ms = 1e3 * (time.perf_counter() - t0) / (len(x) // hop) * args.block_hops
        reads = weight_read_floor_ms(fp32)
        int8_peak, fp32_peak = gemm_peaks()
    print_table(args, model, call_ms, self_ms, profiled, offline_ms, reads)
    read_ms = reads["int8" if args.int8 else "fp32"][0]
    print_floor(
        args, fp32, call_ms, np.array(steps[: len(call_ms)]), read_ms, (int8_peak, fp32_peak)
    )


def print_table(args, model, call_ms, self_ms, profiled, offline_ms, reads):
    hop_ms = float(call_ms.mean())
    audio_ms = 1e3 * args.block_hops * model.config.hop_samples / model.config.sample_rate
    print(f"| part | ms per call ({audio_ms:g} ms of audio) |\n|---|---|")
    print(f"| streaming call, wall (no profiler), mean | {hop_ms:.3f} |")
    rest = profiled
    for name, ops in GROUPS:
        ms = sum(v for k, v in self_ms.items() if k in ops)
        rest -= ms
        print(f"| - {name} | {ms:.3f} |")
    print(f"| - other ops (norm, mel, pointwise, copies) | {rest:.3f} |")
    print(f"| - Python and dispatch (wall minus profiled ops) | {max(hop_ms - profiled, 0):.3f} |")
    for kind, (floor_ms, size_mb) in reads.items():
        print(
            f"| full-band {kind} weights ({size_mb:.1f} MB) read once, GEMVs alone | {floor_ms:.3f} |"
        )
    print(f"| offline forward, for the call's {args.block_hops} frame(s) | {offline_ms:.3f} |")


def print_floor(args, model, call_ms, steps, read_ms, peaks):
    """The measured calls next to the hop's floors: its MACs over this core's GEMM peak, and
    reading the full-band weights once (``read_ms``, batch-1 GEMVs)."""
    int8_peak, fp32_peak = peaks
    macs_sub, macs_plain = hop_macs(model.config)
    shrink = model.config.shrink_size
    macs_mean = macs_plain + (macs_sub - macs_plain) / shrink
    peak = int8_peak if args.int8 else fp32_peak
    kind = "int8" if args.int8 else "fp32"
    print(
        f"\nGEMM peak on {args.threads} thread(s), {PEAK_SIZE}^3: int8 {int8_peak / 1e9:.0f} "
        f"GMAC/s, fp32 {fp32_peak / 1e9:.0f} GMAC/s; floors below use the {kind} peak"
    )
    print(
        "| hop | MMAC | arithmetic floor ms | with full-band weight reads ms | measured mean ms "
        "| p50 ms "
        "| p99 ms | mean / arithmetic floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    hops = args.block_hops
    rows = [("every call", macs_mean * hops, call_ms)]
    if hops == 1:
        rows += [
            ("sub-band steps", macs_sub, call_ms[steps]),
            ("sub-band waits", macs_plain, call_ms[~steps]),
        ]
    for name, macs, ms in rows:
        floor = 1e3 * macs / peak
        # batch-1 full-band GEMVs wait on memory: their weights read once per hop, at best
        fullband = 1e3 * macs_plain * hops / peak
        with_reads = floor - fullband + max(fullband, read_ms * hops)
        print(
            f"| {name} | {macs / 1e6:.1f} | {floor:.3f} | {with_reads:.3f} | {ms.mean():.3f} | "
            f"{np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | "
            f"{ms.mean() / floor:.1f}x |"
        )


if __name__ == "__main__":
    main()
