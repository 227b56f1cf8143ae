"""``--input noisy.wav --output enhanced.wav``: the engine over a file, block by block."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fsnet.audio import SAMPLE_RATE
from fsnet.cli import StopSignals, exit_status
from fsnet.errors import FsnetError
from fsnet.live.engine import gc_frozen, load_engine, warm_up
from fsnet.live.record import open_writer, prepare_output, write_error
from fsnet.live.report import Stats, StatusPrinter, keep_up_warnings, print_summary
from fsnet.streaming import AlignedOutput


def remove_stale_partials(out_path: Path) -> None:
    """Remove the temporary files that dead runs writing ``out_path`` left next to it.

    A running writer holds a lock on its temporary file (:class:`_Locked`), so a file whose lock
    can be taken belongs to a run that is gone (killed, crashed, machine reset).
    """
    import fcntl

    patterns = (f".{out_path.name}.*.tmp", f".{out_path.name}.*.partial")  # the latter: old runs
    removed = []
    for pattern in patterns:
        for path in sorted(out_path.parent.glob(pattern)):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                removed.append(path.name)
            except OSError:  # locked: a live run is writing it
                pass
            finally:
                os.close(fd)
    if removed:
        print(
            f"note: removed {len(removed)} unfinished file(s) of earlier stopped runs next to "
            f"{out_path}: {', '.join(removed)}",
            file=sys.stderr,
        )


class _Locked:
    """Hold an exclusive lock on ``path`` while a run writes it (see remove_stale_partials)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Locked:
        import fcntl

        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


def run_file(args: argparse.Namespace, stop: StopSignals, undo: contextlib.ExitStack) -> int:
    """Enhance ``args.input`` into ``args.output``; a stop signal ends the stream at a block
    boundary and the file keeps what was processed (exit status 128 + signal)."""
    from fsnet.audio import load_audio, output_format

    stop.check()  # a signal that came while torch was imported
    output_format(args.output, args.subtype, SAMPLE_RATE)  # refuse a bad name/subtype early
    x, notices = load_audio(args.input, SAMPLE_RATE)
    prepare_output(args.output)  # before the model loads
    remove_stale_partials(Path(args.output))
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    if args.duration is not None:
        x = x[: int(round(args.duration * SAMPLE_RATE))]
    # Signals wait for these safe points: loading and packing weights are never cut short.
    stop.check()
    engine, source = load_engine(args, undo)
    stop.check()
    warm_up(engine)
    stop.check()
    # As fast as possible, a second per call runs the network over 62 frames at once (offline
    # speed); in real time a hop per call, as a sound card would deliver it.
    block = args.block_samples or (256 if args.realtime else SAMPLE_RATE)
    stats = Stats(block / SAMPLE_RATE)
    mode = "real time" if args.realtime else "as fast as possible"
    print(
        f"streaming {args.input} -> {args.output}: {len(x) / SAMPLE_RATE:.2f} s, blocks of {block} samples "
        f"({1e3 * block / SAMPLE_RATE:.1f} ms), {mode}, {source} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    undo.enter_context(gc_frozen())  # no full collection inside the timed blocks
    written = _stream_to_file(args, engine, x, block, stats, stop)
    interrupted = stop.requested
    stop_reason = f"stopped by {stop.name}" if interrupted else "end of input"
    summary = _summary(args, engine, stats, block, len(x), written, stop_reason)
    summary["warnings"] = keep_up_warnings(summary) if args.realtime else []
    if interrupted:
        summary["warnings"].append(
            f"interrupted: {args.output} holds the first {written / SAMPLE_RATE:.2f} s of "
            f"{len(x) / SAMPLE_RATE:.2f} s"
        )
    print_summary(summary, args.summary_json)
    return exit_status(stop.signum) if interrupted else 0


def _stream_to_file(
    args: argparse.Namespace,
    engine: Any,
    x: np.ndarray,
    block: int,
    stats: Stats,
    stop: StopSignals,
) -> int:
    """Feed ``x`` to ``engine`` ``block`` samples at a time into ``args.output`` (time-aligned
    with ``x``) until the end or a stop signal; returns the samples written."""
    import soundfile as sf

    from fsnet.audio import ClipCounter
    from fsnet.errors import check_finite_output
    from fsnet.files import atomic_write, write_failure

    out_path = Path(args.output)
    status = StatusPrinter(args.status_interval)
    align = AlignedOutput(engine.latency_samples)
    consumed = written = 0
    try:
        with atomic_write(out_path) as tmp, _Locked(tmp):
            writer = open_writer(tmp, args.subtype, display=args.output)
            clip = ClipCounter(writer.subtype)

            def write(y: np.ndarray) -> int:
                check_finite_output(y, args.output)
                if len(y):
                    writer.write(clip(y))
                return len(y)

            try:
                t_next = time.monotonic()
                for start in range(0, len(x), block):
                    if stop.requested:  # between blocks: nothing of torch's is in flight
                        break
                    chunk = x[start : start + block]
                    t0 = time.perf_counter()
                    y = engine.process(chunk)
                    stats.add_block(time.perf_counter() - t0, len(chunk) / SAMPLE_RATE)
                    consumed += len(chunk)
                    written += write(align(y)[: len(x) - written])
                    status.maybe_print(stats)
                    if args.realtime:
                        t_next += len(chunk) / SAMPLE_RATE
                        delay = t_next - time.monotonic()
                        if delay > 0:
                            stop.wait(delay)
                written += write(align(engine.flush())[: max(0, consumed - written)])
                if written < consumed:
                    written += write(np.zeros(consumed - written, dtype=np.float32))
            finally:
                writer.close()
    except (sf.LibsndfileError, OSError) as exc:  # only the writes do I/O in this loop
        reason = write_failure(exc, out_path.parent) or write_error(exc)
        raise FsnetError(f"cannot write {args.output}: {reason}") from None
    finally:
        status.end()
    clipped = clip.notice(out_path.name)
    if clipped:
        print(f"note: {clipped}", file=sys.stderr)
    return written


def _summary(
    args: argparse.Namespace,
    engine: Any,
    stats: Stats,
    block: int,
    samples_in: int,
    written: int,
    stop_reason: str,
) -> dict[str, Any]:
    latency = engine.latency_samples
    return {
        "mode": "file",
        "input": args.input,
        "output": args.output,
        "engine": engine.name,
        "sample_rate": SAMPLE_RATE,
        "blocksize": block,
        "block_ms": 1e3 * block / SAMPLE_RATE,
        "blocks": stats.blocks,
        "audio_seconds": stats.audio_seconds,
        "samples_in": int(samples_in),
        "samples_written": int(written),
        "compute": stats.compute_stats(),
        "rtf": stats.rtf(),
        "slow_blocks": stats.slow_blocks,
        "algorithmic_latency_samples": latency,
        "algorithmic_latency_ms": 1e3 * latency / SAMPLE_RATE,
        "stop_reason": stop_reason,
        "interrupted": stop_reason != "end of input",
    }
