"""Training and validation curves of ``train.py``'s fast configuration against the eager fp32 loop,
over the first ``--steps`` steps on the synthetic corpus, in one PNG.

    python benchmarks/train_curves.py --fast "system.cuda_graph=step" \\
        [--steps 2000] [--val-every 250] [--out benchmarks/results]

Runs ``train.py`` (``benchmarks/loop_runs.py``: synthetic corpus with DNS-like file lengths, CSV
log, no checkpoints) three times:

* **fast** — the default config with ``--fast``'s Hydra overrides;
* **fast, other seed** — the same with the next seed (other weights, other mixtures): the spread
  between the two fast runs is the run-to-run noise the comparison is read against
  (``--no-noise-run`` leaves it out);
* **reference** — the default config with ``--reference``'s overrides (default: fp32, no CUDA
  graphs), the same seed as **fast**.

Validation (loss and ``system.metrics``) runs every ``--val-every`` steps on the corpus's small
validation set (8 utterances of 4 s). Writes ``<out>/<name>.png`` (training loss, raw and a
moving average; validation loss and metrics), ``<out>/<name>.json`` (the curves and a summary:
final training loss averaged over the last 10 % of steps, last validation values, and the
fast-vs-reference difference beside the fast-vs-fast one). On one H200 with 16 cores,
``--parallel --workers 5`` runs the three together (about 2,000 fp32 steps' time). Smoke test
on a CPU:
``python benchmarks/train_curves.py --device cpu --model tiny --batch 2 --steps 6 --val-every 3
--workers 1 --corpus-size tiny --fast "" --reference "" --out /tmp/curves``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import loop_runs  # noqa: E402

from fsnet.files import atomic_write  # noqa: E402


def run(args, label: str, overrides: list[str], seed: int, corpus: Path) -> dict[str, Any]:
    """One training run; its logged curves ``{metric: (steps, values)}`` and its overrides."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
    run_dir = (args.out / f"{args.name}_runs" / slug).resolve()
    base = [
        f"model={args.model}",
        f"trainer.val_check_interval={args.val_every}",
        "trainer.log_every_n_steps=10",
        f"system.metric_workers={args.metric_workers}",
        *([f"data.batch_size={args.batch}"] if args.batch else []),
    ]
    command = loop_runs.train_command(
        corpus,
        run_dir,
        args.steps,
        loop_runs.merge_overrides(base, overrides),
        device=args.device,
        workers=args.workers,
        timer_warmup=min(50, max(args.steps // 2, 1)),
        seed=seed,
    )
    print(f"{label}: python {' '.join(shlex.quote(c) for c in command[1:])}", flush=True)
    try:
        wall = loop_runs.run_train(command, run_dir, args.timeout)
        print(f"{label}: {wall:.0f} s", flush=True)
        error = None
    except RuntimeError as failure:  # a stopped or failed run still shows what it logged
        error = str(failure)
        print(f"{label}: {error}", flush=True)
    rows = loop_runs.read_metrics(run_dir)
    names = sorted({k for r in rows for k in r if k.startswith(("train/loss", "val/"))})
    curves = {name: loop_runs.series(rows, name) for name in names}
    curves.pop("val/num_utterances", None)
    return {"label": label, "overrides": overrides, "seed": seed, "curves": curves, "error": error}


def moving_average(values: list[float], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    x = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate(([0.0], x)))
    counts = np.minimum(np.arange(1, len(x) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(x) + 1) - counts]) / counts


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run: mean training loss over its last 10 % of logged steps and its last validation
    values; then each metric's |fast - reference| beside |fast - fast(other seed)|."""
    per_run = {}
    for r in runs:
        values = {}
        for name, (_, ys) in r["curves"].items():
            if not ys:
                continue
            tail = ys[-max(len(ys) // 10, 1) :] if name == "train/loss" else ys[-1:]
            values[name] = float(np.mean(tail))
        per_run[r["label"]] = values
    fast, noise, ref = (per_run.get(k) for k in ("fast", "fast, other seed", "reference"))
    differences = {}
    if fast and ref:
        for name in fast:
            if name in ref:
                differences[name] = {
                    "fast - reference": fast[name] - ref[name],
                    "fast - fast(other seed)": fast[name] - noise[name]
                    if noise and name in noise
                    else None,
                }
    return {"final": per_run, "differences": differences}


def plot(path: Path, runs: list[dict[str, Any]], title: str, smooth: int) -> None:
    """Training loss and every validation curve, one panel each, all runs overlaid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = ["train/loss"] + sorted(
        {n for r in runs for n in r["curves"] if n.startswith("val/")},
        key=lambda n: (n != "val/loss", n),
    )
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = {"fast": "tab:blue", "fast, other seed": "tab:cyan", "reference": "tab:orange"}
    for ax, name in zip(axes, names, strict=False):
        for r in runs:
            steps, values = r["curves"].get(name, ([], []))
            if not steps:
                continue
            colour = colours.get(r["label"])
            label = f"{r['label']} (seed {r['seed']}" + (", stopped)" if r.get("error") else ")")
            if name == "train/loss":
                ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.6)
                ax.plot(steps, moving_average(values, smooth), color=colour, label=label)
                ax.set_yscale("log")
            else:
                ax.plot(steps, values, "o-", color=colour, label=label, markersize=3)
        ax.set_title(
            name + (f" (moving average of {smooth} logs)" if name == "train/loss" else ""),
            fontsize=9,
        )
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    with_lines = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if with_lines:
        with_lines[0].legend(fontsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--fast", required=True, help="Hydra overrides of the fast configuration (one string)"
    )
    parser.add_argument(
        "--reference",
        default="trainer.precision=32-true system.cuda_graph=false",
        help="Hydra overrides of the reference",
    )
    parser.add_argument(
        "--no-noise-run", action="store_true", help="skip the fast run with seed + 1"
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--val-every", type=int, default=250, help="training steps between validations"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch", type=int, default=None, help="data.batch_size (default: the config's)"
    )
    parser.add_argument("--model", default="fast_fullsubnet", help="configs/model/<name>.yaml")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--workers", type=int, default=12, help="data.num_workers of each run")
    parser.add_argument(
        "--parallel", action="store_true", help="start the runs together (divide --workers)"
    )
    parser.add_argument("--metric-workers", type=int, default=4, help="system.metric_workers")
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/fsnet_speed_corpus"))
    parser.add_argument("--corpus-size", choices=["dns", "tiny"], default="dns")
    parser.add_argument(
        "--timeout", type=float, default=480, help="seconds before a run is stopped"
    )
    parser.add_argument("--smooth", type=int, default=20, help="logged points per moving average")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="train_curves", help="file name of the PNG and JSON")
    args = parser.parse_args(argv)
    spec = loop_runs.CorpusSpec() if args.corpus_size == "dns" else loop_runs.CorpusSpec.tiny()
    corpus = loop_runs.make_corpus(args.corpus, spec)
    fast, reference = shlex.split(args.fast), shlex.split(args.reference)
    plan = [("fast", fast, args.seed)]
    if not args.no_noise_run:
        plan.append(("fast, other seed", fast, args.seed + 1))
    plan.append(("reference", reference, args.seed))
    if args.parallel:  # one GPU, several processes: the curves, not the speed, are measured
        with concurrent.futures.ThreadPoolExecutor(len(plan)) as pool:
            runs = list(pool.map(lambda p: run(args, *p, corpus), plan))
    else:
        runs = [run(args, label, overrides, seed, corpus) for label, overrides, seed in plan]
    title = (
        f"first {args.steps} steps, synthetic corpus; fast: {args.fast or '(default config)'}; "
        f"reference: {args.reference or '(default config)'}"
    )
    plot(args.out / f"{args.name}.png", runs, title, args.smooth)
    result = {"title": title, "summary": summary(runs), "runs": runs}
    with atomic_write(args.out / f"{args.name}.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out / args.name}.png and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
