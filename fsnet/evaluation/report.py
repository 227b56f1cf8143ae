"""The write step of an evaluation: the Markdown tables (stdout and ``summary.md``),
``per_file.csv`` and ``summary.json``, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fsnet.files import atomic_write

ROW_LABELS = {
    "pesq_wb": "WB-PESQ",
    "pesq_nb": "NB-PESQ",
    "stoi": "STOI",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR (dB)",
    "dnsmos_sig": "DNSMOS SIG",
    "dnsmos_bak": "DNSMOS BAK",
    "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_p808": "DNSMOS P.808",
}


def _fmt(value: float | None, signed: bool = False, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_diff(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "NaN in one"
    return f"{value:.1e}" if value else "0"


def format_tables(summary: Mapping[str, Any]) -> str:
    """The Markdown report printed on stdout (also saved as ``summary.md``): a table per mode, for
    a folder of test sets one per subset and mode and one over all files, and in ``mode=both``
    the offline/streaming agreement over all files."""
    lines = []
    n, secs = summary["num_files"], summary["audio_seconds"]
    layout = "clean+noisy pairs" if summary["layout"] == "paired" else "noisy only"
    subsets = summary.get("subsets") or {}
    of = f" ({len(subsets)} subsets: {', '.join(subsets)})" if subsets else ""
    lines.append(
        f"## fsnet evaluation: {n} file(s), {secs:.1f} s ({layout}) from {summary['testset']}{of}"
    )
    model = summary["model"]
    lines.append(
        f"model: {summary['checkpoint_label']} ({model['num_parameters'] / 1e6:.2f} M parameters, "
        f"{model['norm']} norm, latency {model['latency_ms']:.1f} ms)"
    )
    for name, part in subsets.items():
        _mode_tables(
            lines,
            summary,
            part,
            f"{name} ({part['num_files']} file(s), {part['audio_seconds']:.1f} s), ",
        )
    _mode_tables(
        lines, summary, summary, f"all subsets ({n} file(s), {secs:.1f} s), " if subsets else ""
    )
    if "max_abs_diff" in summary:
        _agreement_table(lines, summary)
    lines.append("")
    lines.append(f"results: {summary['output_dir']}")
    return "\n".join(lines)


def _agreement_table(lines: list[str], summary: Mapping[str, Any]) -> None:
    """Append the offline-vs-streaming heading and table (mode=both) to ``lines``."""
    subsets = summary.get("subsets") or {}
    lines.append("")
    verdict = "agree" if summary["streaming_matches_offline"] else "DISAGREE"
    where = [k for k, part in subsets.items() if not part["streaming_matches_offline"]]
    lines.append(
        f"### offline vs streaming{', all subsets' if subsets else ''}: {verdict}"
        f"{' in ' + ', '.join(where) if where else ''} (largest per-file difference, "
        f"tolerance {summary['diff_tolerance']:g}; waveforms differ by at most "
        f"{summary['max_abs_sample_diff']:.1e})"
    )
    lines.append("")
    lines.append("| metric | offline | streaming | max diff |")
    lines.append("|---|---:|---:|---:|")
    off, st = summary["results"]["offline"], summary["results"]["streaming"]
    for name, d in summary["max_abs_diff"].items():
        lines.append(
            f"| {ROW_LABELS[name]} | {_fmt(off[name]['enhanced'])} | {_fmt(st[name]['enhanced'])} "
            f"| {_fmt_diff(d)} |"
        )


def _mode_tables(
    lines: list[str], summary: Mapping[str, Any], part: Mapping[str, Any], label: str
) -> None:
    """Append a heading (``### <label><mode>: RTF ...``) and a metric table per mode of ``part``
    (the summary itself, or one of its subsets) to ``lines``."""
    threads = summary["num_threads"]
    for mode, result in part["results"].items():
        rtf = part["rtf"][mode]
        how = f"{summary['stream_block_samples']}-sample blocks, " if mode == "streaming" else ""
        precision = summary.get("precision", "fp32")
        if mode == "offline" and precision.startswith("onnx"):
            precision = "fp32"  # the ONNX graphs are the streaming step; offline is PyTorch
        lines.append("")
        lines.append(
            f"### {label}{mode}: RTF {_fmt(rtf)} ({how}{summary['device']}, {precision}, "
            f"{threads} thread{'s' if threads != 1 else ''}{_shaping_note(summary)})"
        )
        lines.append("")
        lines.append("| metric | noisy | enhanced | improvement |")
        lines.append("|---|---:|---:|---:|")
        for name, r in result.items():
            lines.append(
                f"| {ROW_LABELS[name]} | {_fmt(r['noisy'])} | {_fmt(r['enhanced'])} "
                f"| {_fmt(r['improvement'], signed=True)} |"
            )


def _shaping_note(summary: Mapping[str, Any]) -> str:
    """``", postfilter 0.3, attenuation limit 12 dB"`` for a run with mask shaping, else ``""``."""
    from fsnet.frontend import MaskShaping

    shaping = MaskShaping(**summary.get("mask_shaping", {}))
    return f", {shaping.describe()}" if shaping.active else ""


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as null, paths as text and numpy scalars as Python ones."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["file"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def write_results(out_dir: Path, summary: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
    """``per_file.csv``, ``summary.md`` (the tables) and ``summary.json`` (all but the tables)."""
    write_csv(out_dir / "per_file.csv", rows)
    write_text(out_dir / "summary.md", summary["table"] + "\n")
    as_json = {k: v for k, v in summary.items() if k != "table"}
    write_text(out_dir / "summary.json", json.dumps(json_safe(as_json), indent=2) + "\n")
