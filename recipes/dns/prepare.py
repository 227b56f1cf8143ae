#!/usr/bin/env python3
"""Scan a DNS Challenge (Interspeech 2020) tree into cached file lists and report what is missing.

    python recipes/dns/prepare.py --root /data/DNS-Challenge/datasets [--rir-root DIR] [--force]

Writes ``clean.txt``, ``noise.txt``, ``rir.txt`` and ``val.txt`` (one file per line with its length
and sample rate) to ``--list-dir`` (default ``<root>/fsnet_lists``, or a folder under
``~/.cache/fsnet/lists`` when the root is read-only). Training (``python train.py recipe=dns``)
calls the same scan and re-uses these lists, so running this first is optional; it is useful to
check a download, or to re-scan after adding files (``--force``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", default=os.environ.get("DNS_ROOT"), help="corpus root (default: $DNS_ROOT)"
    )
    parser.add_argument(
        "--rir-root", default=None, help="folder of room impulse responses (optional)"
    )
    parser.add_argument(
        "--list-dir", default=None, help="where to write the lists (default: <root>/fsnet_lists)"
    )
    parser.add_argument("--force", action="store_true", help="re-scan even if lists exist")
    parser.add_argument(
        "--on-bad-file",
        choices=("skip", "error"),
        default="skip",
        help="unreadable audio: skip with a warning, or stop",
    )
    parser.add_argument("--name", default="dns", help="corpus name used in messages")
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=16000,
        help="training rate in Hz (for resampling notices)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from fsnet.data import rate_notices, scan_corpus
    from fsnet.errors import FsnetError

    try:
        lists = scan_corpus(
            args.root,
            args.rir_root,
            args.list_dir,
            force=args.force,
            on_bad_file=args.on_bad_file,
            name=args.name,
            root_hint="pass --root <dir> or set DNS_ROOT",
        )
    except FsnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: {lists.summary()}")
    written = (
        ", ".join(lists.rescanned)
        if lists.rescanned
        else "none (cached lists are current; --force re-scans)"
    )
    print(f"lists in {lists.list_dir}; written now: {written}")
    if lists.rir_root is None:
        print("no RIR folder given: training will run without reverberation")
    for notice in rate_notices(lists, args.sample_rate):
        print(f"notice: {notice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
