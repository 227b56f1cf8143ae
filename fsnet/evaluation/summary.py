"""The summarise step of an evaluation: per-file rows and mean metrics, per subset and overall."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fsnet.audio import SAMPLE_RATE
from fsnet.evaluation.enhance import Enhanced
from fsnet.evaluation.options import Options
from fsnet.evaluation.scoring import Results
from fsnet.evaluation.testset import Item

log = logging.getLogger(__name__)


def _mean(values: list[float]) -> tuple[float, int]:
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else math.nan), len(finite)


def _metric_table(
    files: list[int], results: Results, mode: str, metric_names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Mean noisy, enhanced and improvement per metric (over the files where each is finite)."""
    table = {}
    for name in metric_names:
        noisy_vals = [results[(i, "noisy")][name] for i in files]
        enh_vals = [results[(i, mode)][name] for i in files]
        noisy_mean, _ = _mean(noisy_vals)
        enh_mean, n_valid = _mean(enh_vals)
        gain, _ = _mean([e - nv for e, nv in zip(enh_vals, noisy_vals, strict=True)])
        table[name] = {
            "noisy": noisy_mean,
            "enhanced": enh_mean,
            "improvement": gain,
            "num_files": n_valid,
        }
    return table


def _agreement(
    files: list[int], results: Results, metric_names: tuple[str, ...]
) -> dict[str, float]:
    """The largest per-file offline/streaming difference per metric (inf: NaN in one only)."""
    diffs = {}
    for name in metric_names:
        worst = 0.0
        for i in files:
            a, b = results[(i, "offline")][name], results[(i, "streaming")][name]
            if math.isnan(a) and math.isnan(b):
                continue
            d = abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf
            worst = max(worst, d)
        diffs[name] = worst
    return diffs


def aggregate(
    files: list[int],
    results: Results,
    enhanced: Enhanced,
    metric_names: tuple[str, ...],
    tolerance: float,
) -> dict[str, Any]:
    """The summary of the files with these indices: sizes, RTF, the mean metrics per mode and, for
    two modes, the largest offline/streaming differences."""
    modes = list(enhanced.seconds)
    samples = enhanced.samples
    audio_seconds = sum(samples[i] for i in files) / SAMPLE_RATE
    enhancement_seconds = {m: sum(enhanced.seconds[m][i] for i in files) for m in modes}
    out: dict[str, Any] = {
        "num_files": len(files),
        "audio_seconds": audio_seconds,
        "rtf": {m: enhancement_seconds[m] / max(audio_seconds, 1e-9) for m in modes},
        "enhancement_seconds": enhancement_seconds,
        "results": {m: _metric_table(files, results, m, metric_names) for m in modes},
    }
    if len(modes) == 2:
        diffs = _agreement(files, results, metric_names)
        out["max_abs_diff"] = diffs
        out["max_abs_sample_diff"] = max((enhanced.sample_diffs[i] for i in files), default=0.0)
        out["diff_tolerance"] = tolerance
        out["streaming_matches_offline"] = all(d < tolerance for d in diffs.values())
    return out


def subsets_of(items: list[Item]) -> dict[str, list[int]]:
    """``{subset: indices of its files}`` (empty unless the test set is a folder of test sets)."""
    subsets: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if item.subset:
            subsets.setdefault(item.subset, []).append(i)
    return subsets


def per_file_rows(
    items: list[Item], results: Results, enhanced: Enhanced, metric_names: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The rows of ``per_file.csv``: file names, duration, every metric, the RTF per mode."""
    has_subsets = any(item.subset for item in items)
    modes, samples = list(enhanced.seconds), enhanced.samples
    rows = []
    for i, item in enumerate(items):
        row: dict[str, Any] = {"subset": item.subset} if has_subsets else {}
        row["file"] = item.name
        row["clean"] = item.clean.name if item.clean else ""
        row["duration_s"] = samples[i] / SAMPLE_RATE
        for s in ("noisy", *modes):
            for name in metric_names:
                row[f"{s}_{name}"] = results[(i, s)].get(name, math.nan)
        for mode in modes:
            row[f"rtf_{mode}"] = enhanced.seconds[mode][i] / max(row["duration_s"], 1e-9)
        rows.append(row)
    return rows


def summarise(
    opts: Options,
    items: list[Item],
    layout: str,
    model,
    results: Results,
    enhanced: Enhanced,
    metric_names: tuple[str, ...],
) -> dict[str, Any]:
    """The run's summary (``summary.json`` before the output fields): what was evaluated, with
    which model and settings, and the results over all files and per subset."""
    import torch

    import fsnet

    def part(files: list[int]) -> dict[str, Any]:
        return aggregate(files, results, enhanced, metric_names, opts.diff_tolerance)

    overall = part(list(range(len(items))))
    summary: dict[str, Any] = {
        "fsnet_version": fsnet.__version__,
        "testset": str(opts.testset),
        "layout": layout,
        "num_files": overall["num_files"],
        "audio_seconds": overall["audio_seconds"],
        "checkpoint": opts.checkpoint,
        "checkpoint_label": opts.checkpoint or "bundled pretrained model",
        "model": {
            "config": model.config.to_dict(),
            "norm": model.norm,
            "num_parameters": model.num_parameters,
            "latency_ms": model.config.latency_ms,
        },
        "mode": opts.mode,
        "device": opts.device,
        "num_threads": torch.get_num_threads(),
        "precision": opts.precision,
        "num_threads_setting": opts.num_threads,
        "stream_block_samples": opts.stream_block_samples,
        "mask_shaping": dataclasses.asdict(opts.shaping),
        "metrics": list(metric_names),
    }
    # rtf, enhancement_seconds, results and the offline/streaming differences: of all files.
    summary.update((k, v) for k, v in overall.items() if k not in summary)
    subsets = subsets_of(items)
    if subsets:
        summary["subsets"] = {
            name: {"testset": str(opts.testset / name), **part(files)}
            for name, files in subsets.items()
        }
    if "streaming_matches_offline" in summary and not summary["streaming_matches_offline"]:
        _warn_disagreement(summary, opts.diff_tolerance)
    return summary


def _warn_disagreement(summary: Mapping[str, Any], tolerance: float) -> None:
    bad = [n for n, d in summary["max_abs_diff"].items() if not d < tolerance]
    where = [n for n, r in summary.get("subsets", {}).items() if not r["streaming_matches_offline"]]
    log.warning(
        "warning: offline and streaming metrics differ by more than %g on %s%s",
        tolerance,
        ", ".join(bad),
        f" (in {', '.join(where)})" if where else "",
    )
