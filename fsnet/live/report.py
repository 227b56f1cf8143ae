"""Timing statistics, the status line and the exit summary of a live run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fsnet.errors import FsnetError

KEEP_UP_RTF = 0.9  # warn above this real-time factor


class Stats:
    """Per-block compute times and the callback's status flags; thread-safe enough (GIL)."""

    def __init__(self, block_seconds: float) -> None:
        self.block_seconds = block_seconds
        self.compute: list[float] = []  # seconds per block (list.append is atomic under the GIL)
        self.audio_seconds = 0.0
        self.blocks = 0
        self.callbacks = 0
        self.input_overflows = 0
        self.output_underflows = 0
        # flagged at the first callback: the device ran before the stream had produced a block
        # (PortAudio's ALSA backend on PulseAudio does it on every start), so the gap is
        # silence before the first output, not lost audio
        self.startup_underflows = 0
        self.input_underflows = 0
        self.output_overflows = 0
        self.late_blocks = 0  # FIFO ran dry: silence played instead
        self.slow_blocks = 0  # a block took longer than its duration
        self.drop_callbacks: list[
            int
        ] = []  # callback numbers with a drop (first 20), for diagnosis
        self.started = time.monotonic()
        # what PortAudio's timestamps say the devices buffer (seconds, last callback): on
        # ALSA's pulse plugin the capture can run far behind the nominal input latency
        self.input_delay_s: float | None = None
        self.output_delay_s: float | None = None

    def note_device_delay(self, time_info: Any) -> None:
        now = float(getattr(time_info, "currentTime", 0.0) or 0.0)
        if now > 0.0:  # 0: the host API gives no timestamps
            self.input_delay_s = now - float(time_info.inputBufferAdcTime)
            self.output_delay_s = float(time_info.outputBufferDacTime) - now

    def add_block(self, seconds: float, audio_seconds: float) -> None:
        self.compute.append(seconds)
        self.blocks += 1
        self.audio_seconds += audio_seconds
        if seconds > self.block_seconds:
            self.slow_blocks += 1

    @staticmethod
    def _describe(values: np.ndarray) -> dict[str, float]:
        if not len(values):
            return {"mean_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        return {
            "mean_ms": float(values.mean() * 1e3),
            "p99_ms": float(np.percentile(values, 99) * 1e3),
            "max_ms": float(values.max() * 1e3),
        }

    def compute_stats(self, last: int | None = None) -> dict[str, float]:
        values = self.compute[-last:] if last else self.compute[:]
        return self._describe(np.asarray(values, dtype=np.float64))

    def rtf(self) -> float:
        return float(sum(self.compute) / self.audio_seconds) if self.audio_seconds else 0.0

    def status_line(self) -> str:
        recent = max(1, int(round(2.0 / self.block_seconds)))
        c = self.compute_stats(last=recent)
        return (
            f"{self.audio_seconds:7.1f} s | block {c['mean_ms']:5.2f} ms mean, {c['max_ms']:5.2f} max "
            f"(budget {self.block_seconds * 1e3:.1f}) | RTF {self.rtf():.2f} | "
            f"overflows {self.input_overflows} underflows {self.output_underflows} late {self.late_blocks}"
        )


def keep_up_warnings(summary: dict[str, Any]) -> list[str]:
    warnings = []
    comp = summary["compute"]
    budget_ms = summary["block_ms"]
    if summary["rtf"] > KEEP_UP_RTF:
        warnings.append(
            f"cannot keep up in real time: RTF {summary['rtf']:.2f} > {KEEP_UP_RTF} "
            "(use a smaller model, --threads, or a faster machine)"
        )
    if summary["mode"] == "mic" and comp["p99_ms"] > budget_ms:
        warnings.append(
            f"cannot keep up in real time: p99 block time {comp['p99_ms']:.2f} ms > block duration "
            f"{budget_ms:.2f} ms (try --engine thread or a larger --blocksize)"
        )
    dropped = (
        summary.get("input_overflows", 0)
        + summary.get("output_underflows", 0)
        + summary.get("late_blocks", 0)
    )
    if dropped:
        warnings.append(
            f"audio was dropped: {summary.get('input_overflows', 0)} input overflows, "
            f"{summary.get('output_underflows', 0)} output underflows, {summary.get('late_blocks', 0)} late blocks"
        )
    if summary.get("nonfinite_input_samples"):
        warnings.append(
            f"{summary['nonfinite_input_samples']} captured samples were NaN or infinite and were "
            "enhanced as silence"
        )
    return warnings


def print_summary(summary: dict[str, Any], json_path: str | None) -> None:
    c = summary["compute"]
    lines = [
        f"summary: {summary['audio_seconds']:.2f} s of audio in {summary['blocks']} blocks of "
        f"{summary['block_ms']:.1f} ms ({summary['stop_reason']})",
        f"  compute per block: mean {c['mean_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, max {c['max_ms']:.2f} ms; "
        f"RTF {summary['rtf']:.3f}",
    ]
    if summary["mode"] == "mic":
        lines.append(
            f"  dropped/late: input overflows {summary['input_overflows']}, output underflows "
            f"{summary['output_underflows']}, late blocks {summary['late_blocks']}, "
            f"slow blocks {summary['slow_blocks']}"
            + (
                "; the device also underran once while starting, before the first block "
                "(no audio lost)"
                if summary.get("startup_output_underflows")
                else ""
            )
        )
        lines.append(
            f"  latency: algorithmic {summary['algorithmic_latency_ms']:.1f} ms "
            f"({summary['algorithmic_latency_samples']} samples) + resampling/buffering "
            f"{summary['pipeline_latency_ms']:.1f} ms; device (PortAudio) input "
            f"{summary['device_latency_ms'][0]:.1f} ms, output {summary['device_latency_ms'][1]:.1f} ms"
            + (
                "; by the devices' timestamps at the end: input "
                f"{summary['measured_device_delay_ms'][0]:.1f} ms, output "
                f"{summary['measured_device_delay_ms'][1]:.1f} ms"
                if summary.get("measured_device_delay_ms")
                else ""
            )
        )
        if summary["delay_grown_frames"]:
            lines.append(
                f"  buffering grew by {summary['delay_grown_frames']} frames in "
                f"{summary['delay_grow_events']} step(s) (resampler jitter above the initial estimate)"
            )
    else:
        lines.append(
            f"  latency: algorithmic {summary['algorithmic_latency_ms']:.1f} ms "
            f"({summary['algorithmic_latency_samples']} samples, removed from the file)"
        )
    for warning in summary["warnings"]:
        lines.append(f"warning: {warning}")
    try:
        print("\n".join(lines), file=sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SIGHUP after a closed SSH session): files still count
        pass
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:  # after the audio files are complete: they are kept
            raise FsnetError(
                f"cannot write --summary-json {json_path}: {exc.strerror or exc}"
            ) from None


class StatusPrinter:
    def __init__(self, interval: float | None) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 5.0)
        self.next = time.monotonic() + self.interval
        self.printed = False

    def seconds_to_next(self) -> float:
        if self.interval <= 0:
            return 1.0
        return min(1.0, max(0.01, self.next - time.monotonic()))

    def maybe_print(self, stats: Stats) -> None:
        if self.interval <= 0 or time.monotonic() < self.next:
            return
        self.next += self.interval
        line = stats.status_line()
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
            self.printed = True
        else:
            sys.stderr.write("status: " + line + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.printed:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.printed = False
