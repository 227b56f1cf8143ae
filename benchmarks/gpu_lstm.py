"""The sub-band LSTMs' training cost on one GPU: cuDNN against fsnet.fused_lstm.

    python benchmarks/gpu_lstm.py [--batch 72] [--json OUT.jsonl] [--profile | --learn]

Per layer (forward + backward, bf16 autocast, the sub-band shapes at this batch: batch x 64 bands
sequences of 97 shrunk frames, 12 -> 384 then 384 -> 384), eager and replayed as a CUDA graph, and
the whole bare training step of the paper-size model with each kernel choice. Reports ms and
the layer's TFLOP/s (LSTM: 2 * 4H(I + H) FLOP per sequence per frame forward, twice that backward).
"""

from __future__ import annotations

import argparse
import json

import torch
from gpu_throughput import graphed

import fsnet
from fsnet.frontend import build_cirm
from fsnet.layers import RecurrentLayer, set_training_kernel


def timed(fn, iters: int = 20, graph: bool = False) -> float:
    """Median ms of ``fn()`` (CUDA events), optionally captured as one CUDA graph first."""
    run = graphed(fn) if graph else fn
    if not graph:
        for _ in range(3):
            fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


KINDS = ("cudnn", "auto")  # auto: fsnet.fused_lstm for the sub-band layers


def layer_rows(batch: int, out: list) -> None:
    rows, frames = batch * 64, 97
    for inputs in (12, 384):
        layer = RecurrentLayer(inputs, 384).cuda()
        x = torch.randn(rows, frames, inputs, device="cuda", requires_grad=True)
        flop = 3 * 2 * 4 * 384 * (inputs + 384) * rows * frames
        for kind in KINDS:
            set_training_kernel(layer, kind)

            def step(layer=layer, x=x):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    y, _ = layer(x)
                y.float().square().mean().backward()

            for graph in (False, True):
                ms = timed(step, graph=graph)
                row = {
                    "what": f"layer {inputs}->384",
                    "kernel": kind,
                    "graph": graph,
                    "ms": ms,
                    "tflops": flop / ms / 1e9,
                    "rows": rows,
                }
                print(row, flush=True)
                out.append(row)


def step_rows(batch: int, out: list, profile: bool = False) -> None:
    model = fsnet.build_model().cuda().train()
    samples = int(3.072 * 16000)
    noisy = torch.randn(batch, samples, device="cuda") * 0.1
    clean = noisy * 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True, capturable=True)

    def step():
        with torch.no_grad():
            spec = model.stft.stft(noisy)
            target = build_cirm(spec, model.stft.stft(clean))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(spec.abs()[:, None]).float(), target)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        set_training_kernel(model, "auto")
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profiler(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
        return
    for kind in KINDS:
        set_training_kernel(model, kind)
        for graph in (False, True):
            ms = timed(step, iters=15, graph=graph)
            row = {
                "what": "bare step",
                "kernel": kind,
                "graph": graph,
                "ms": ms,
                "audio_s_per_s": batch * 3.072 / ms * 1e3,
                "batch": batch,
            }
            print(row, flush=True)
            out.append(row)


def learning_rows() -> None:
    """Whether the paper-size model learns in 40 Adam steps on one fixed batch, for each kernel
    and dtype (the bare step, no Lightning, no loader): the loss of the first and last steps."""
    torch.manual_seed(0)
    noisy = torch.randn(16, int(3.072 * 16000), device="cuda") * 0.1
    clean = torch.nn.functional.avg_pool1d(noisy[:, None], 9, 1, 4)[:, 0]  # a learnable target
    for dtype in (torch.bfloat16, torch.float32):
        for kind in KINDS:
            torch.manual_seed(1)
            model = fsnet.build_model().cuda().train()
            set_training_kernel(model, kind)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
            losses = []
            for _ in range(40):
                with torch.no_grad():
                    spec = model.stft.stft(noisy)
                    target = build_cirm(spec, model.stft.stft(clean))
                with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                    pred = model(spec.abs()[:, None]).float()
                loss = torch.nn.functional.mse_loss(pred, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            print({"dtype": str(dtype), "kernel": kind, "first": losses[:3], "last": losses[-3:]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=72)
    parser.add_argument("--json", default=None, help="write the rows here (JSON lines)")
    parser.add_argument("--layers-only", action="store_true")
    parser.add_argument("--profile", action="store_true", help="kernel table of one bare step")
    parser.add_argument(
        "--learn", action="store_true", help="loss over 40 steps per kernel and dtype"
    )
    args = parser.parse_args()
    if args.profile:
        return step_rows(args.batch, [], profile=True)
    if args.learn:
        return learning_rows()
    rows: list = []
    layer_rows(args.batch, rows)
    if not args.layers_only:
        step_rows(args.batch, rows)
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
