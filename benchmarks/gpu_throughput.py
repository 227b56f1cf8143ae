"""GPU throughput of the paper-size model: one training step and offline inference.

    python benchmarks/gpu_throughput.py train --batch 72 --precision bf16 [--compile|--cuda-graph] [--profile]
    python benchmarks/gpu_throughput.py infer --batch 64 --seconds 10 --precision bf16

Synthetic tensors, no data loader (the loader is measured by the training recipe). Reports
ms per step and audio-seconds per second. Not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import fsnet
from fsnet.enhance import enhance_batch
from fsnet.frontend import build_cirm

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device | str = "cuda") -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def cuda_time(fn, warmup: int, iters: int, device: torch.device | str = "cuda") -> float:
    """Median wall time of fn() in ms, synchronising around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1e3 * (time.perf_counter() - t0))
    times.sort()
    return times[len(times) // 2]


def train_step(
    model: torch.nn.Module,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    precision: str = "bf16",
    cuda_graph: bool = False,
    compile: bool = False,
):
    """A callable running one bare training step of ``model`` on the batch ``noisy``/``clean``
    ``[B, N]`` (on the model's device): STFT, cIRM target, forward under autocast, MSE,
    backward, clipping at 10, fused Adam.

    ``cuda_graph``: the whole step (front end, forward, backward, clipping, Adam) replayed as one
    graph, which removes the per-kernel CPU launch cost that small-batch recurrent steps are
    bound by.
    """
    # capturable: the step counter stays on the GPU, so the optimiser step can live in a graph
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=cuda_graph)
    dtype = DTYPES[precision]
    device_type = noisy.device.type
    forward = torch.compile(model) if compile else model

    def step():
        with torch.no_grad():
            noisy_spec = model.stft.stft(noisy)
            target = build_cirm(noisy_spec, model.stft.stft(clean))
            mag = noisy_spec.abs()[:, None]
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(forward(mag).float(), target)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()

    return graphed(step) if cuda_graph else step


def graphed(step):
    """``step`` captured as a CUDA graph after three warm-up calls; returns the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def bench_train(args) -> dict:
    model = fsnet.build_model().cuda().train()
    samples = int(args.seconds * model.config.sample_rate)
    noisy = torch.randn(args.batch, samples, device="cuda") * 0.1
    clean = noisy * 0.5
    run = train_step(model, noisy, clean, args.precision, args.cuda_graph, args.compile)
    ms = cuda_time(run, warmup=5 if not args.compile else 10, iters=args.iters)
    if args.profile:
        profile_step(run, args.profile)
    return {
        "what": "train_step",
        "batch": args.batch,
        "seconds": args.seconds,
        "precision": args.precision,
        "compile": args.compile,
        "cuda_graph": args.cuda_graph,
        "ms_per_step": ms,
        "audio_s_per_s": args.batch * args.seconds / (ms / 1e3),
    }


def profile_step(run, table_path: str, steps: int = 5) -> None:
    """Where a step's time goes: GPU kernel time by kind vs wall time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        torch.cuda.synchronize()
        wall_ms = 1e3 * (time.perf_counter() - t0) / steps
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        if event.device_type.name != "CUDA":  # CPU ops also carry their kernels' time
            continue
        gpu_ms = event.self_device_time_total / 1e3 / steps
        if gpu_ms <= 0:
            continue
        name = event.key.lower()
        kind = next(
            (
                k
                for k, words in (
                    ("recurrent (cuDNN RNN)", ("rnn", "lstm", "persist")),
                    ("GEMM", ("gemm", "cutlass", "sm90", "xmma", "matmul")),
                    ("FFT", ("fft",)),
                    ("optimizer", ("adam", "multi_tensor", "foreach")),
                )
                if any(w in name for w in words)
            ),
            "other (elementwise, copies, reductions)",
        )
        kinds[kind] = kinds.get(kind, 0.0) + gpu_ms
    busy = sum(kinds.values())
    print(f"profile: wall {wall_ms:.1f} ms/step, GPU kernels {busy:.1f} ms/step")
    for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:40s} {ms:7.2f} ms  ({100 * ms / max(wall_ms, 1e-9):4.1f}% of the step)")
    with open(table_path, "w") as f:
        f.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40))


def bench_infer(args) -> dict:
    model = fsnet.build_model().cuda().eval()
    samples = int(args.seconds * model.config.sample_rate)
    noisy = torch.randn(args.batch, samples, device="cuda") * 0.1
    dtype = DTYPES[args.precision]
    forward = torch.compile(enhance_batch) if args.compile else enhance_batch

    @torch.inference_mode()
    def run():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            return forward(model, noisy)

    ms = cuda_time(run, warmup=3, iters=args.iters)
    return {
        "what": "offline_inference",
        "batch": args.batch,
        "seconds": args.seconds,
        "precision": args.precision,
        "compile": args.compile,
        "ms_per_batch": ms,
        "audio_s_per_s": args.batch * args.seconds / (ms / 1e3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("what", choices=["train", "infer"])
    parser.add_argument("--batch", type=int, default=72)
    parser.add_argument("--seconds", type=float, default=3.072, help="audio per example")
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="train: capture the whole step as a CUDA graph"
    )
    parser.add_argument(
        "--profile", default=None, help="train: profile 5 steps, write the kernel table here"
    )
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", default=None, help="append the result as a JSON line here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA GPU (none found)")
    torch.backends.cudnn.benchmark = True
    result = bench_train(args) if args.what == "train" else bench_infer(args)
    result["device"] = torch.cuda.get_device_name()
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
