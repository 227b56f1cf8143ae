"""Does a trained candidate replace the bundled model? The ship rule of the debian_audio recipe.

    python evaluate.py checkpoint=<candidate.pt> testset=<set> output_dir=<cand_set>   # per set
    python evaluate.py testset=<set> output_dir=<bundled_set>                           # per set
    python recipes/debian_audio/ship_rule.py --candidate <cand_set> ... --bundled <bundled_set> ...

Each folder is one ``evaluate.py`` run (its ``summary.json``); candidate and bundled folders are
given in the same set order. The candidate ships only if, on every set, both what PESQ hears
(WB-PESQ) and what listeners hear (DNSMOS OVRL) are above the bundled model's, and its STOI is not
below the noisy input's. One metric alone is not enough: earlier stages gained WB-PESQ while
leaving the most residual noise of four systems. Prints a table; exit status 0 = ship, 1 = not,
2 = the folders cannot be compared (unreadable, or a pair scored different noisy inputs). A run
with ``mode=both`` is judged on its offline scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MUST_RISE = ("pesq_wb", "dnsmos_ovrl")
SHOWN = ("pesq_wb", "pesq_nb", "stoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


def results(folder: Path) -> dict:
    """``{metric: {"noisy", "enhanced", ...}}`` of one evaluate.py run's offline (or only) mode."""
    summary = json.loads((folder / "summary.json").read_text())
    by_mode = summary["results"]
    return by_mode.get("offline") or next(iter(by_mode.values()))


def verdict(candidate: dict, bundled: dict) -> list[str]:
    """Why the candidate fails on this set (empty: it passes)."""
    missing = [m for m in (*MUST_RISE, "stoi") if m not in candidate or m not in bundled]
    if missing:
        return [f"{', '.join(missing)} not measured (evaluate.py metrics=[...,dnsmos])"]
    failed = [
        f"{m} {candidate[m]['enhanced']:.3f} <= {bundled[m]['enhanced']:.3f}"
        for m in MUST_RISE
        if candidate[m]["enhanced"] <= bundled[m]["enhanced"]
    ]
    if candidate["stoi"]["enhanced"] < candidate["stoi"]["noisy"]:
        failed.append("STOI below the noisy input's")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--candidate", type=Path, nargs="+", required=True)
    parser.add_argument("--bundled", type=Path, nargs="+", required=True)
    args = parser.parse_args(argv)
    if len(args.candidate) != len(args.bundled):
        parser.error("give one --bundled folder per --candidate folder, in the same order")
    print("| set | model | " + " | ".join(SHOWN) + " |")
    print("|---|---|" + "---|" * len(SHOWN))
    reasons = []
    for cand_dir, bund_dir in zip(args.candidate, args.bundled, strict=True):
        try:
            cand, bund = results(cand_dir), results(bund_dir)
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            print(f"ship_rule.py: error: {cand_dir} / {bund_dir}: {exc}", file=sys.stderr)
            return 2
        if any(
            abs(cand[m]["noisy"] - bund[m]["noisy"]) > 1e-6
            for m in MUST_RISE
            if m in cand and m in bund
        ):
            print(
                f"ship_rule.py: error: {cand_dir} and {bund_dir} scored different noisy inputs"
                " (give the folders of each set in the same order)",
                file=sys.stderr,
            )
            return 2
        for label, res in (("bundled", bund), ("candidate", cand)):
            cells = [f"{res[m]['enhanced']:.3f}" if m in res else "-" for m in SHOWN]
            print(f"| {cand_dir.name} | {label} | " + " | ".join(cells) + " |")
        reasons += [f"{cand_dir.name}: {r}" for r in verdict(cand, bund)]
    print("\nship: yes" if not reasons else "\nship: no\n" + "\n".join(f"- {r}" for r in reasons))
    return 0 if not reasons else 1


if __name__ == "__main__":
    sys.exit(main())
