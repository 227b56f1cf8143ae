#!/usr/bin/env python3
"""How fast the training loader mixes examples: batches/s and audio seconds/s for a worker count.

    python recipes/dns/benchmark_loader.py --root /data/DNS/datasets --rir-root DIR \
        --batch-size 72 --num-workers 12 --seconds 60

Compare the result with the training throughput (``train/audio_seconds_per_second`` in the logs):
if the loader alone is not comfortably faster, raise ``data.num_workers``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    parser.add_argument("--batch-size", type=int, default=72, help="examples per batch")
    parser.add_argument("--num-workers", type=int, default=12, help="DataLoader worker processes")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="how long to measure (after warm-up)"
    )
    args = parser.parse_args(argv)

    from fsnet.data import DnsDataModule
    from fsnet.errors import FsnetError

    try:
        dm = DnsDataModule(
            args.root,
            args.rir_root,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            samples_per_epoch=10**7,
            pin_memory=False,
        )
        dm.setup("fit")
    except FsnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    loader = iter(dm.train_dataloader())
    start = time.perf_counter()
    for _ in range(max(1, args.num_workers)):  # first batch of every worker: startup
        next(loader)
    warm = time.perf_counter()
    batches = 0
    while time.perf_counter() - warm < args.seconds:
        noisy, _ = next(loader)
        batches += 1
    elapsed = time.perf_counter() - warm
    seconds_per_batch = noisy.shape[0] * noisy.shape[1] / dm.mixing.sample_rate
    print(
        f"batch {args.batch_size}, {args.num_workers} workers: startup {warm - start:.1f} s, "
        f"{batches / elapsed:.2f} batches/s, {batches * args.batch_size / elapsed:.0f} examples/s, "
        f"{batches * seconds_per_batch / elapsed:.0f} audio s/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
