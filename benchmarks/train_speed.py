"""Training speed in one call: the original Fast FullSubNet's bare step, fsnet's bare step and
``train.py``'s real loop, on the same GPU, as ms/step, audio-seconds per second, the ratio to the
original's bare step and model FLOP utilisation.

    bash benchmarks/fetch_original.sh                 # once, where there is network: .original/FullSubNet
    python benchmarks/train_speed.py --original .original/FullSubNet --out DIR \\
        [--loop "fast=system.cuda_graph=step"] \\
        [--loop "fast b256=system.cuda_graph=step data.batch_size=256"]

Rows, each at batch 72 and 256 × 3.072 s unless changed (``--batch``, ``--seconds``):

* **original**: the original's own model (imported from the checkout, as
  ``benchmarks/compare_original.py`` does) with its recipe's sizes, Adam settings and clipping
  (``train_shrinkSize2.toml``), and its trainer's step as written: STFT with its ``audio_zen``
  code, its compressed cIRM target, fp16 autocast, MSE, GradScaler, clipping at 10, Adam,
  ``loss.item()``. cuDNN on with autotuning (the recipe turns cuDNN off, which is slower): the
  faster form of the original is the baseline. No data loader, no DDP wrapper.
* **fsnet step**: ``benchmarks/gpu_throughput.py``'s bare step (``train_step``): fsnet's front
  end and cIRM, bf16 autocast, MSE, clipping, fused Adam; eager and as one CUDA graph.
* **train.py loop** (batch 72 only, unless a variant's overrides say otherwise): a ``train.py``
  subprocess (Lightning, data loader with ``--loop-workers`` workers, the real config) on a
  synthetic corpus with DNS-like file lengths (``benchmarks/loop_runs.py``), ``--loop-steps``
  steps; the wall time of the steps after the first ``--loop-warmup`` (cuDNN autotuning, graph
  capture, loader start) is measured by ``benchmarks/step_timer.py``. ``--loop LABEL=OVERRIDES``
  (repeatable) adds a variant with extra Hydra overrides; the default config is always run first.

The ratio is audio-seconds per second over the original's at the same batch size (the first
``--batch`` where that batch has no original row).

FLOP counting (``training_flops``), analytic from the model config: per frame and sequence, an
LSTM layer's forward costs 2·4·H·(I+H) FLOP (its four gates' input and recurrent GEMMs; GRU:
2·3·H·(I+H)), a linear layer 2·I·O. Full-band layers (F_l2m, F_m2l) run T + look_ahead frames
(T: fsnet's STFT frames of the segment, 193 for 3.072 s as the original's), one sequence per
example; the sub-band model runs
1 + ceil((T + look_ahead - 1) / shrink_size) blocks, num_mels sequences per example. Backward is
counted as twice the forward (input and weight gradients), so a training step is 3× the forward
times the batch. Not counted: biases, gate non-linearities, norms, the mel projection, STFT,
loss and optimiser (together well under 1 %). Model FLOP utilisation = those FLOPs per second
over ``--peak-tflops`` (dense bf16/fp16 peak; 989 for H100/H200 SXM), the same for every row:
the rows do the same useful arithmetic, so MFU ranks them as the ratio does.

``--out DIR`` gets ``train_speed.json`` (rows and the setting), ``train_speed.md`` (the table)
and the loop runs' folders (``runs/loop_*``: config, CSV log, output). Smoke test on a CPU, tiny
sizes: ``python benchmarks/train_speed.py --device cpu --model tiny --batch 2 --seconds 1
--iters 2 --warmup 1 --loop-steps 4 --loop-warmup 2 --loop-workers 1 --corpus-size tiny
--original .original/FullSubNet --out /tmp/speed``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import shlex
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

# This repository's fsnet (not an installed one) and the benchmarks next to this file.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import gpu_throughput  # noqa: E402
import loop_runs  # noqa: E402
from compare_original import original_model_class  # noqa: E402

from fsnet.config import ModelConfig  # noqa: E402
from fsnet.files import atomic_write  # noqa: E402
from fsnet.frontend import STFT  # noqa: E402
from fsnet.model import build_model  # noqa: E402

DEFAULT_SECONDS = 3.072  # the recipes' training segment, s
RECIPE_TOML = "recipes/dns_interspeech_2020/fast_fullsubnet/train_shrinkSize2.toml"


# ------------------------------------------------------------------------------ FLOPs
def _recurrent_flops(input_size: int, hidden: int, layers: int, rnn_type: str) -> int:
    """Forward FLOP of one frame of one sequence through a recurrent stack."""
    gates = 4 if rnn_type == "LSTM" else 3
    total = 0
    for k in range(layers):
        total += 2 * gates * hidden * ((input_size if k == 0 else hidden) + hidden)
    return total


def _fullband_flops(input_size: int, hidden_sizes, output_size: int, rnn_type: str) -> int:
    """Forward FLOP per frame of a stack of single-layer recurrent layers + final projection."""
    total = 0
    for hidden in hidden_sizes:
        total += _recurrent_flops(input_size, hidden, 1, rnn_type)
        input_size = hidden
    return total + 2 * input_size * output_size


def forward_flops(cfg: ModelConfig, num_samples: int) -> dict[str, int]:
    """Forward FLOP of one example of ``num_samples`` samples, per part (see the module doc)."""
    frames = STFT(cfg.n_fft, cfg.hop_samples).num_frames(num_samples) + cfg.look_ahead
    blocks = 1 + math.ceil((frames - 1) / cfg.shrink_size)
    m = cfg.num_mels
    encoder = _fullband_flops(m, cfg.encoder_hidden_sizes, m, cfg.rnn_type)
    decoder = _fullband_flops(2 * m, cfg.decoder_hidden_sizes, 2 * cfg.num_freqs, cfg.rnn_type)
    subband = _recurrent_flops(
        cfg.subband_unit_size, cfg.bottleneck_hidden_size, cfg.bottleneck_num_layers, cfg.rnn_type
    )
    subband += 2 * cfg.bottleneck_hidden_size  # projection to one value per band
    return {
        "encoder": encoder * frames,
        "subband": subband * blocks * m,
        "decoder": decoder * frames,
    }


def training_flops(cfg: ModelConfig, batch: int, num_samples: int) -> float:
    """FLOP of one training step: 3 × forward × batch."""
    return 3.0 * batch * sum(forward_flops(cfg, num_samples).values())


def model_config(name: str) -> ModelConfig:
    """``configs/model/<name>.yaml`` as a ModelConfig."""
    from omegaconf import OmegaConf

    path = loop_runs.REPO / "configs" / "model" / f"{name}.yaml"
    return ModelConfig.from_dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


# ------------------------------------------------------------------------------ bare steps
def original_step(checkout: Path, batch: int, seconds: float, device: torch.device):
    """The original trainer's step (``fast_fullsubnet/trainer.py``, ``_train_epoch``) on random
    audio; returns ``(step callable, the original's ModelConfig-equivalent sizes)``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    model_class = original_model_class(checkout)  # puts the checkout on sys.path
    if importlib.util.find_spec("librosa") is None:
        # audio_zen's feature module imports librosa for functions its stft does not use.
        sys.modules["librosa"] = types.SimpleNamespace()
    from audio_zen.acoustics.feature import stft
    from audio_zen.acoustics.mask import build_complex_ideal_ratio_mask

    recipe = tomllib.loads((checkout / RECIPE_TOML).read_text())
    acoustics, opt = recipe["acoustics"], recipe["optimizer"]
    model = model_class(**recipe["model"]["args"]).to(device).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=opt["lr"], betas=(opt["beta1"], opt["beta2"])
    )
    amp = device.type == "cuda"  # fp16 autocast needs the GPU; the CPU smoke runs fp32
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    clip = recipe["trainer"]["train"]["clip_grad_norm_value"]
    frame = dict(
        n_fft=acoustics["n_fft"],
        hop_length=acoustics["hop_length"],
        win_length=acoustics["win_length"],
    )
    noisy = torch.randn(batch, int(seconds * acoustics["sr"]), device=device) * 0.1
    clean = noisy * 0.5

    def step() -> float:
        optimizer.zero_grad()
        noisy_mag, _, noisy_real, noisy_imag = stft(noisy, **frame)
        _, _, clean_real, clean_imag = stft(clean, **frame)
        cirm = build_complex_ideal_ratio_mask(noisy_real, noisy_imag, clean_real, clean_imag)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            crm = model(noisy_mag.unsqueeze(1)).permute(0, 2, 3, 1)
            loss = torch.nn.functional.mse_loss(cirm, crm)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        return loss.item()

    args = recipe["model"]["args"]
    sizes = ModelConfig(
        num_mels=args["num_mels"],
        bottleneck_hidden_size=args["bottleneck_hidden_size"],
        bottleneck_num_layers=args["bottleneck_num_layers"],
        noisy_num_neighbors=args["noisy_input_num_neighbors"],
        encoder_output_num_neighbors=args["encoder_output_num_neighbors"],
        shrink_size=args["shrink_size"],
        look_ahead=args["look_ahead"],
        rnn_type=args["sequence_model"],
    )  # the original's full-band sizes are fixed in its code and equal fsnet's defaults
    return step, sizes, "fp16 AMP" if amp else "fp32"


def bare_rows(args, device: torch.device, report) -> None:
    """Original and fsnet bare steps at each ``--batch``, reported row by row."""
    for batch in args.batch:
        if args.original is not None:
            step, sizes, precision = original_step(args.original, batch, args.seconds, device)
            ms = gpu_throughput.cuda_time(step, args.warmup, args.iters, device)
            report(
                _row("original", "original bare step", batch, args.seconds, precision, ms, sizes)
            )
            del step
            _free(device)
        cfg = model_config(args.model)
        for graph in (False, True) if device.type == "cuda" else (False,):
            model = build_model(cfg).to(device).train()
            noisy = torch.randn(batch, int(args.seconds * cfg.sample_rate), device=device) * 0.1
            run = gpu_throughput.train_step(model, noisy, noisy * 0.5, args.precision, graph)
            ms = gpu_throughput.cuda_time(run, args.warmup, args.iters, device)
            name = "fsnet bare step" + (", one CUDA graph" if graph else ", eager")
            command = (
                f"benchmarks/gpu_throughput.py train --batch {batch} --precision {args.precision}"
            )
            row = _row("fsnet_step", name, batch, args.seconds, args.precision, ms, cfg)
            report({**row, "command": command + (" --cuda-graph" if graph else "")})
            del model, run
            _free(device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _row(kind, name, batch, seconds, precision, ms, cfg: ModelConfig, **extra) -> dict[str, Any]:
    samples = int(round(seconds * cfg.sample_rate))
    flops = training_flops(cfg, batch, samples)
    return {
        "kind": kind,
        "name": name,
        "batch": batch,
        "seconds": seconds,
        "precision": precision,
        "ms_per_step": ms,
        "audio_s_per_s": batch * seconds / (ms / 1e3),
        "train_gflop_per_step": flops / 1e9,
        "tflops": flops / (ms / 1e3) / 1e12,
        **extra,
    }


# ------------------------------------------------------------------------------ train.py loop
def parse_loop(spec: str) -> tuple[str, list[str]]:
    """``"LABEL=OVERRIDES"`` -> ``(label, [override, ...])``; the overrides are shell-split."""
    label, _, overrides = spec.partition("=")
    if not label.strip():
        raise SystemExit(f"train_speed.py: error: --loop wants LABEL=OVERRIDES, got {spec!r}")
    return label.strip(), shlex.split(overrides)


def loop_row(args, label: str, overrides: list[str], corpus: Path, index: int) -> dict[str, Any]:
    """One ``train.py`` run of ``--loop-steps`` steps, measured after ``--loop-warmup``."""
    from omegaconf import OmegaConf

    run_dir = (args.out / "runs" / f"loop_{index}").resolve()
    base = [f"model={args.model}", f"data.batch_size={args.batch[0]}"]
    if args.seconds != DEFAULT_SECONDS:  # the config's own segment length otherwise
        base.append(f"data.mixing.segment_seconds={args.seconds}")
    command = loop_runs.train_command(
        corpus,
        run_dir,
        args.loop_steps,
        loop_runs.merge_overrides(base, overrides),
        device=args.device,
        workers=args.loop_workers,
        timer_warmup=args.loop_warmup,
    )
    wall = loop_runs.run_train(command, run_dir, args.loop_timeout)
    timer = loop_runs.step_times(run_dir)
    cfg = loop_runs.resolved_config(run_dir)
    model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    batch = int(cfg.data.batch_size)
    seconds = float(OmegaConf.select(cfg, "data.mixing.segment_seconds", default=args.seconds))
    ms = 1e3 * timer["seconds"] / max(timer["steps"], 1)
    rows = loop_runs.read_metrics(run_dir)
    steps, logged = loop_runs.series(rows, "train/audio_seconds_per_second")
    logged = sorted(v for s, v in zip(steps, logged, strict=True) if s >= args.loop_warmup)
    _, losses = loop_runs.series(rows, "train/loss")
    return _row(
        "train_loop",
        f"train.py loop: {label}",
        batch,
        seconds,
        str(cfg.trainer.precision),
        ms,
        model_cfg,
        overrides=overrides,
        timed_steps=timer["steps"],
        logged_audio_s_per_s_median=logged[len(logged) // 2] if logged else None,
        last_train_loss=losses[-1] if losses else None,
        run_seconds=wall,
        command="python " + " ".join(shlex.quote(c) for c in command[1:]),
    )


# ------------------------------------------------------------------------------ report
def add_ratios(rows: list[dict[str, Any]], peak_tflops: float) -> None:
    """``vs_original`` (same batch, else the first original row) and ``mfu`` of every row."""
    originals = [r for r in rows if r["kind"] == "original"]
    for row in rows:
        row["mfu"] = row["tflops"] / peak_tflops
        ref = next((o for o in originals if o["batch"] == row["batch"]), None) or next(
            iter(originals), None
        )
        row["vs_original"] = row["audio_s_per_s"] / ref["audio_s_per_s"] if ref else None
        row["vs_original_batch"] = ref["batch"] if ref else None


def markdown(rows: list[dict[str, Any]], setting: dict[str, Any]) -> str:
    lines = [
        f"Training speed on {setting['device']}, {setting['date']} "
        f"(torch {setting['torch']}, cuDNN {setting['cudnn']}; "
        f"MFU against {setting['peak_tflops']:g} TFLOP/s; "
        f"`{setting['command']}`)",
        "",
        "| what | batch | precision | ms / step | audio-s / s | vs original | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "" if r["vs_original"] is None else f"{r['vs_original']:.2f}"
        if r["vs_original"] is not None and r["vs_original_batch"] != r["batch"]:
            ratio += f" (vs batch {r['vs_original_batch']})"
        what = r["name"] + (f" `{' '.join(r['overrides'])}`" if r.get("overrides") else "")
        lines.append(
            f"| {what} | {r['batch']} | {r['precision']} | {r['ms_per_step']:.1f} | "
            f"{r['audio_s_per_s']:,.0f} | {ratio} | {r['tflops']:.1f} | {100 * r['mfu']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def _setting(args, device: torch.device) -> dict[str, Any]:
    commit_file = args.original / "ORIGINAL_COMMIT" if args.original else None
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "CPU",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "peak_tflops": args.peak_tflops,
        "original_commit": commit_file.read_text().strip()
        if commit_file and commit_file.exists()
        else None,
        "command": "python benchmarks/train_speed.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--original",
        type=Path,
        default=None,
        help="FullSubNet checkout (or fetch_original.sh's folder); none = no original rows",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the JSON, the table and the loop runs"
    )
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[72, 256],
        help="bare-step batch sizes; the first is the loops' too",
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="audio per example")
    parser.add_argument(
        "--precision", choices=["bf16", "fp16", "fp32"], default="bf16", help="fsnet bare step"
    )
    parser.add_argument("--iters", type=int, default=30, help="timed bare steps (median)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed bare steps first")
    parser.add_argument(
        "--model", default="fast_fullsubnet", help="configs/model/<name>.yaml for fsnet's rows"
    )
    parser.add_argument(
        "--loop",
        action="append",
        default=[],
        metavar="LABEL=OVERRIDES",
        help="a train.py variant with these Hydra overrides (repeatable)",
    )
    parser.add_argument(
        "--no-default-loop", action="store_true", help="skip the loop with the default config"
    )
    parser.add_argument("--loop-steps", type=int, default=300)
    parser.add_argument("--loop-warmup", type=int, default=50, help="untimed first steps of a loop")
    parser.add_argument(
        "--loop-workers", type=int, default=12, help="data.num_workers of the loops"
    )
    parser.add_argument(
        "--loop-timeout", type=float, default=240, help="seconds before a loop run is stopped"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("/tmp/fsnet_speed_corpus"),
        help="synthetic corpus (made if absent)",
    )
    parser.add_argument("--corpus-size", choices=["dns", "tiny"], default="dns")
    parser.add_argument("--skip-bare", action="store_true", help="loops only")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="dense bf16 peak of the GPU (H100/H200 SXM: 989)",
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train_speed.py: error: no CUDA GPU (--device cpu for a smoke run)")
    if args.original is not None:
        args.original = args.original.expanduser().resolve()
    loops = [] if args.no_default_loop else [("default config", [])]
    loops += [parse_loop(spec) for spec in args.loop]
    t0 = time.perf_counter()
    if loops:  # first: its worker processes fork from a process that has not touched CUDA yet
        spec = loop_runs.CorpusSpec() if args.corpus_size == "dns" else loop_runs.CorpusSpec.tiny()
        corpus = loop_runs.make_corpus(args.corpus, spec)
    device = torch.device(args.device)
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    setting, rows = _setting(args, device), []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        add_ratios(rows, args.peak_tflops)
        print(
            f"{row['name']}{' ' + ' '.join(row.get('overrides', [])) if row.get('overrides') else ''}, "
            f"batch {row['batch']}: {row['ms_per_step']:.1f} ms/step, "
            f"{row['audio_s_per_s']:,.0f} audio-s/s, {row['tflops']:.1f} TFLOP/s "
            f"[{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
        with atomic_write(args.out / "train_speed.json") as tmp:
            Path(tmp).write_text(json.dumps({"setting": setting, "rows": rows}, indent=1))
        with atomic_write(args.out / "train_speed.md") as tmp:
            Path(tmp).write_text(markdown(rows, setting))

    if not args.skip_bare:
        bare_rows(args, device, report)
    for index, (label, overrides) in enumerate(loops):
        try:
            report(loop_row(args, label, overrides, corpus, index))
        except Exception as error:  # one failed variant must not cost the others
            print(f"train.py loop {label!r} failed: {type(error).__name__}: {error}", flush=True)
    print()
    print(markdown(rows, setting))
    print(f"total {time.perf_counter() - t0:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
