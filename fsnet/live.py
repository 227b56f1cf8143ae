"""Real-time enhancement: ``python stream_infer.py`` / ``fsnet-stream``.

Two front ends drive the same engine (:class:`fsnet.streaming.StreamingEnhancer`):

* ``--mic``: a full-duplex PortAudio stream (``sounddevice``) from an input device to an output
  device. Any device rate and channel count: the capture is downmixed to mono and resampled to the
  model rate with a streaming resampler (``soxr.ResampleStream``), the enhanced signal is
  resampled back and copied to every output channel.
* ``--input noisy.wav --output enhanced.wav``: the same engine over a file, block by block, as
  fast as possible or paced at real time (``--realtime``); the output is time-aligned with the
  input and equals ``fsnet.enhance(model, x)``.

Design (see docs/realtime.md): the enhancement runs inside the PortAudio callback by default
(``--engine callback``), which is deterministic and has the lowest latency when a block's compute
fits in the block; ``--engine thread`` moves it to a worker thread behind a fixed jitter buffer of
``--queue-blocks`` blocks. Either way the output goes through a FIFO that starts with exactly the
number of silent samples the pipeline needs (found by simulating the block/hop/resampler sample
counts), so the input-to-output delay is constant. If the worker is late, silence is played and
its samples are dropped when they arrive, so the delay never drifts; in the callback engine a
shortfall can only be structural (resampler buffering above the estimate), so the delay grows
by the missing samples once instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fsnet.cli import Stopped, StopSignals, exit_status
from fsnet.errors import FsnetError
from fsnet.streaming import AlignedOutput

MODEL_RATE = 16000
PROG = "stream_infer.py"
RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
KEEP_UP_RTF = 0.9  # warn above this real-time factor
_CLEANUP: list = []  # undo process-wide settings when main() returns


# --------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line and exit status 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FsnetError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Real-time Fast FullSubNet speech enhancement, from a microphone or a file.",
    )
    mode = p.add_argument_group("what to run")
    mode.add_argument(
        "--mic", action="store_true", help="enhance the input device to the output device live"
    )
    mode.add_argument(
        "--input", metavar="NOISY.wav", help="enhance this file block by block (needs --output)"
    )
    mode.add_argument(
        "--output", metavar="ENHANCED.wav", help="where --input's enhanced audio goes"
    )
    mode.add_argument("--list-devices", action="store_true", help="list audio devices and exit")

    model = p.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="fsnet release file, Lightning .ckpt or FullSubNet checkpoint (default: bundled model)",
    )
    model.add_argument(
        "--passthrough",
        action="store_true",
        help="no model: copy input to output (measures the audio path's own delay)",
    )
    model.add_argument(
        "--dry",
        type=float,
        default=0.0,
        metavar="0..1",
        help="share of unprocessed signal mixed back (default 0)",
    )
    model.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch intra-op threads (default 1: one hop is too little work to share, and "
        "waiting for a descheduled helper thread causes long stalls on a busy machine)",
    )

    dev = p.add_argument_group("live audio (--mic)")
    dev.add_argument(
        "--input-device", metavar="DEV", help="index or name substring (default: system default)"
    )
    dev.add_argument(
        "--output-device", metavar="DEV", help="index or name substring (default: system default)"
    )
    dev.add_argument(
        "--samplerate",
        type=int,
        metavar="HZ",
        help="device rate (default: 16000 if accepted, else the device's)",
    )
    dev.add_argument(
        "--input-channels",
        type=int,
        metavar="N",
        help="capture channels, downmixed (default: up to 2)",
    )
    dev.add_argument(
        "--output-channels",
        type=int,
        metavar="N",
        help="playback channels, all the same (default: up to 2)",
    )
    dev.add_argument(
        "--blocksize",
        type=int,
        metavar="N",
        help="frames per block: device frames per callback with --mic (default: JACK's period on "
        "JACK, else one 16 ms hop at the device rate), samples at 16 kHz in file mode (default 256)",
    )
    dev.add_argument(
        "--latency",
        metavar="low|high|SECONDS",
        help="PortAudio suggested latency (default low)",
    )
    dev.add_argument(
        "--engine",
        choices=("callback", "thread"),
        help="where the model runs: in the audio callback (default) or in a worker thread",
    )
    dev.add_argument(
        "--queue-blocks",
        type=int,
        metavar="N",
        help="with --engine thread: blocks of jitter buffer the worker may fall behind (default 2)",
    )
    dev.add_argument(
        "--resample-quality",
        choices=RESAMPLE_QUALITIES,
        help="soxr quality when the device rate is not 16 kHz (default HQ; LQ/QQ have less delay)",
    )
    dev.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this much audio")
    dev.add_argument(
        "--record",
        metavar="OUT.wav",
        help="also save the enhanced signal (16 kHz, time-aligned with --record-noisy)",
    )
    dev.add_argument(
        "--record-noisy",
        metavar="IN.wav",
        help="also save the capture as the model sees it (16 kHz mono)",
    )

    out = p.add_argument_group("files and reporting")
    out.add_argument(
        "--subtype",
        type=str.upper,
        help="soundfile subtype of written files (default PCM_16 where the format takes it, "
        "else the format's own: VORBIS for .ogg, OPUS for .opus; FLOAT for exact)",
    )
    out.add_argument(
        "--realtime", action="store_true", help="file mode: pace the blocks at real time"
    )
    out.add_argument("--summary-json", metavar="PATH", help="write the exit summary as JSON")
    out.add_argument(
        "--status-interval",
        type=float,
        metavar="SECONDS",
        help="status line period (default 0.5 s on a terminal, 5 s otherwise; 0 = none)",
    )
    return p


# Options of --mic only (None when not given), with the defaults --mic applies.
MIC_ONLY = {
    "input_device": None,
    "output_device": None,
    "samplerate": None,
    "input_channels": None,
    "output_channels": None,
    "latency": "low",
    "engine": "callback",
    "queue_blocks": 2,
    "resample_quality": "HQ",
    "record": None,
    "record_noisy": None,
}


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) hard links."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def _check_args(args: argparse.Namespace) -> None:
    if args.list_devices:
        return
    if args.mic and (args.input or args.output):
        raise FsnetError(
            "--mic and --input/--output are exclusive: enhance either the microphone or a file"
        )
    if args.input and not args.output:
        raise FsnetError("--input needs --output (where the enhanced file goes)")
    if args.output and not args.input:
        raise FsnetError("--output needs --input (the noisy file to enhance)")
    if not args.mic and not args.input:
        raise FsnetError(
            "nothing to do: use --mic, --input NOISY.wav --output ENHANCED.wav, or --list-devices"
        )
    if not 0.0 <= args.dry <= 1.0:
        raise FsnetError(f"--dry must be between 0 and 1, got {args.dry}")
    if args.blocksize is not None and args.blocksize < 1:
        raise FsnetError(f"--blocksize must be >= 1, got {args.blocksize}")
    if args.duration is not None and not (
        math.isfinite(args.duration) and args.duration >= 1 / MODEL_RATE
    ):
        raise FsnetError(
            f"--duration must be at least one sample (1/{MODEL_RATE} s = {1 / MODEL_RATE:g} s), "
            f"got {args.duration:g}"
        )
    if args.input:
        for name in MIC_ONLY:
            if getattr(args, name) is not None:
                raise FsnetError(f"--{name.replace('_', '-')} is only used with --mic")
    elif args.realtime:
        raise FsnetError("--realtime is only used with --input (file mode)")
    for name, default in MIC_ONLY.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.queue_blocks < 1:
        raise FsnetError(f"--queue-blocks must be >= 1, got {args.queue_blocks}")
    if args.threads is not None and args.threads < 1:
        raise FsnetError(f"--threads must be >= 1, got {args.threads}")
    for name in ("input_channels", "output_channels", "samplerate"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FsnetError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.record and args.record_noisy and _same_file(args.record, args.record_noisy):
        raise FsnetError("--record and --record-noisy must be different files")
    if args.input and _same_file(args.input, args.output):
        raise FsnetError(
            f"--output {args.output} is the same file as --input: it would overwrite the "
            "recording; choose another name"
        )
    if args.summary_json:
        for flag in ("input", "output", "record", "record_noisy"):
            if getattr(args, flag) and _same_file(args.summary_json, getattr(args, flag)):
                raise FsnetError(
                    f"--summary-json {args.summary_json} is the same file as "
                    f"--{flag.replace('_', '-')}; choose another name"
                )
    if args.input and Path(args.output).exists() and Path(args.output).is_dir():
        raise FsnetError(f"--output {args.output} is a directory")


# --------------------------------------------------------------------------------------- engines
def _to_numpy(y: Any) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1))


class Fifo:
    """Mono float32 ring buffer with a 'debt': samples owed to the timeline are dropped on write."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(max(int(capacity), 16), dtype=np.float32)
        self.start = 0  # read position
        self.size = 0
        self.skip = 0  # samples to drop from upcoming writes (they were replaced by silence)
        self.dropped = 0

    def write(self, x: np.ndarray) -> None:
        if self.skip:
            k = min(self.skip, len(x))
            self.skip -= k
            self.dropped += k
            x = x[k:]
        n = len(x)
        if not n:
            return
        if self.size + n > len(self.buf):  # rare: grow (amortised)
            grown = np.zeros(max(2 * len(self.buf), self.size + n), dtype=np.float32)
            grown[: self.size] = self.read(self.size)
            self.buf, self.start = grown, 0
        cap = len(self.buf)
        end = (self.start + self.size) % cap
        first = min(n, cap - end)
        self.buf[end : end + first] = x[:first]
        self.buf[: n - first] = x[first:]
        self.size += n

    def read(self, n: int) -> np.ndarray:
        """Up to ``n`` samples (fewer if fewer are buffered)."""
        n = min(n, self.size)
        cap = len(self.buf)
        first = min(n, cap - self.start)
        out = np.concatenate((self.buf[self.start : self.start + first], self.buf[: n - first]))
        self.start = (self.start + n) % cap
        self.size -= n
        return out


class ModelEngine:
    """StreamingEnhancer plus the dry mix; output on the engine's timeline (delayed by latency)."""

    def __init__(self, model: Any, dry: float = 0.0) -> None:
        from fsnet.streaming import StreamingEnhancer

        self.enhancer = StreamingEnhancer(model)
        self.latency_samples = int(self.enhancer.latency_samples)
        self.hop_samples = int(self.enhancer.hop_samples)
        self.dry = float(dry)
        self.name = "model"
        self.nonfinite_samples = 0  # NaN/inf captured samples played as silence
        self.reset()

    def reset(self) -> None:
        self.enhancer.reset()
        self.delay_line = Fifo(4 * self.latency_samples + 4096)
        self.delay_line.write(np.zeros(self.latency_samples, dtype=np.float32))

    def _finish(self, y: Any) -> np.ndarray:
        y = _to_numpy(y).copy()  # owned: the recorder's queue keeps it while the engine runs on
        if self.dry:
            noisy = self.delay_line.read(len(y))
            if len(noisy) < len(y):
                noisy = np.concatenate((noisy, np.zeros(len(y) - len(noisy), np.float32)))
            y = (1.0 - self.dry) * y + self.dry * noisy
        return y

    def process(self, x: np.ndarray) -> np.ndarray:
        """Mono ``x [n]`` at 16 kHz -> the enhanced samples ready so far ``[m]`` (whole hops), with
        the ``--dry`` mix; the first ``latency_samples`` of the stream are silence."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x)
        if bad.any():  # a faulty driver or client: the engine refuses these, so the stream goes on
            self.nonfinite_samples += int(bad.sum())
            x = np.where(bad, np.float32(0.0), x)
        if self.dry:
            self.delay_line.write(x)
        return self._finish(self.enhancer.process(x))

    def flush(self) -> np.ndarray:
        return self._finish(self.enhancer.flush())


class PassthroughEngine:
    """No model: output = input, no latency. Measures the device path (``--passthrough``)."""

    latency_samples = 0
    hop_samples = 1
    name = "passthrough"

    def reset(self) -> None:
        pass

    def process(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, dtype=np.float32, copy=True)

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)


def _load_engine(args: argparse.Namespace) -> tuple[Any, str]:
    if args.passthrough:
        return PassthroughEngine(), "passthrough (no model)"
    import torch

    if torch.get_num_threads() != args.threads:
        previous = torch.get_num_threads()
        _CLEANUP.append(lambda: torch.set_num_threads(previous))  # main() may run in-process
        torch.set_num_threads(args.threads)
    from fsnet.checkpoint import load_model

    try:
        model = load_model(args.checkpoint)
    except FsnetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user problem
        raise FsnetError(f"cannot load checkpoint {args.checkpoint or '(bundled)'}: {exc}") from exc
    if model.config.sample_rate != MODEL_RATE:
        # Resampling, recording and timing here are all at MODEL_RATE.
        raise FsnetError(
            f"{args.checkpoint} is a {model.config.sample_rate} Hz model; stream_infer runs "
            f"{MODEL_RATE} Hz models (enhance other rates with fsnet.enhance)"
        )
    model.eval()
    return ModelEngine(model, dry=args.dry), args.checkpoint or "bundled model"


def _warm_up(engine: Any, blocks: int = 8) -> None:
    """Run a few silent hops so the first real block does not pay for lazy initialisation."""
    hop = max(engine.hop_samples, 256)
    for _ in range(blocks):
        engine.process(np.zeros(hop, dtype=np.float32))
    engine.flush()
    engine.reset()


# --------------------------------------------------------------------------------------- stats
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


def _keep_up_warnings(summary: dict[str, Any]) -> list[str]:
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


def _print_summary(summary: dict[str, Any], json_path: str | None) -> None:
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
    print("\n".join(lines), file=sys.stderr, flush=True)
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


# --------------------------------------------------------------------------------------- recording
def _write_error(exc: BaseException) -> str:
    """The reason in a write error, without the (possibly temporary) file name."""
    return (
        getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    ).strip()


def _prepare_output(path: str) -> None:
    """Create the parent folder of ``path`` and check that a file can be created there."""
    import tempfile

    try:
        parent = Path(path).parent
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except FileExistsError:  # mkdir: the parent (or an ancestor) is a file
        raise FsnetError(f"cannot write {path}: {Path(path).parent} is not a folder") from None
    except OSError as exc:
        raise FsnetError(f"cannot write {path}: {_write_error(exc)}") from None


def _open_writer(path: str | Path, subtype: str | None, display: str | None = None):
    """A 16 kHz mono SoundFile at ``path`` (its folder created unless ``display`` is given: a
    temporary name for the user's file ``display``, which the errors name instead)."""
    import soundfile as sf

    from fsnet.audio import output_format

    fmt, subtype = output_format(display or path, subtype, MODEL_RATE)
    if display is None:
        display = str(path)
        _prepare_output(display)
    try:
        return sf.SoundFile(
            str(path), "w", samplerate=MODEL_RATE, channels=1, subtype=subtype, format=fmt
        )
    except (sf.LibsndfileError, OSError, RuntimeError) as exc:
        raise FsnetError(f"cannot write {display}: {_write_error(exc)}") from None


class Recorder:
    """Writes the capture and the (time-aligned) enhanced signal progressively, off the audio thread.

    The enhanced signal is on the engine's timeline; its first ``latency`` samples (before the
    first input sample) are dropped so both files line up sample for sample. At close the
    enhanced file is cut/padded to the noisy length.
    """

    def __init__(
        self, noisy_path: str | None, out_path: str | None, subtype: str | None, latency: int
    ) -> None:
        self.noisy = _open_writer(noisy_path, subtype) if noisy_path else None
        try:
            self.out = _open_writer(out_path, subtype) if out_path else None
        except FsnetError:
            if self.noisy:
                self.noisy.close()
            raise
        self.paths = {"noisy": noisy_path, "out": out_path}
        self.to_drop = latency
        self.noisy_count = 0
        self.out_count = 0
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="fsnet-recorder", daemon=True)
        self.thread.start()

    def put(self, noisy: np.ndarray, out: np.ndarray) -> None:
        """Queue a block for the writer thread: ``noisy [n]`` as captured and ``out [m]`` as played,
        both mono at 16 kHz (``out`` still carries the engine's latency, dropped when written)."""
        self.queue.put((noisy, out))

    def discard(self) -> None:
        """Remove files that received nothing (the stream never ran)."""
        if self.noisy_count == 0:
            for path in self.paths.values():
                if path:
                    Path(path).unlink(missing_ok=True)

    def _write(self, noisy: np.ndarray | None, out: np.ndarray | None) -> None:
        if noisy is not None and len(noisy):
            self.noisy_count += len(noisy)
            if self.noisy:
                self.noisy.write(noisy)
        if out is not None and len(out):
            if self.to_drop:
                k = min(self.to_drop, len(out))
                self.to_drop -= k
                out = out[k:]
            self.out_count += len(out)
            if self.out is not None:
                self.out.write(out)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self._write(*item)
                if time.monotonic() - last_flush > 1.0:  # keep the header current
                    last_flush = time.monotonic()
                    for f in (self.noisy, self.out):
                        if f is not None:
                            f.flush()
            except Exception as exc:  # noqa: BLE001 - reported at close
                self.error = exc

    def close(self, tail: np.ndarray | None = None) -> None:
        """Write the engine's flushed ``tail``, align the lengths and close both files."""
        self.queue.put(None)
        self.thread.join()
        try:
            if tail is not None and len(tail):
                # drop what precedes the signal, then keep no more than the capture's length
                skip = min(self.to_drop, len(tail))
                self.to_drop -= skip
                tail = tail[skip : skip + max(0, self.noisy_count - self.out_count)]
                self._write(None, tail)
            if self.out is not None and self.noisy_count > self.out_count:
                self.out.write(np.zeros(self.noisy_count - self.out_count, dtype=np.float32))
                self.out_count = self.noisy_count
        finally:
            for f in (self.noisy, self.out):
                if f is not None:
                    f.close()
        if self.error:
            raise FsnetError(f"cannot write recording: {self.error}")


# --------------------------------------------------------------------------------------- file mode
def _remove_stale_partials(out_path: Path) -> None:
    """Remove the temporary files that dead runs writing ``out_path`` left next to it.

    A running writer holds a lock on its temporary file (:func:`_locked`), so a file whose lock
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
    """Hold an exclusive lock on ``path`` while a run writes it (see _remove_stale_partials)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Locked:
        import fcntl

        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


def run_file(args: argparse.Namespace, stop: StopSignals) -> int:
    import soundfile as sf

    from fsnet.audio import load_audio, output_format
    from fsnet.files import atomic_write, write_failure

    out_path = Path(args.output)
    output_format(args.output, args.subtype, MODEL_RATE)  # refuse a bad name/subtype early
    x, notices = load_audio(args.input, MODEL_RATE)
    _prepare_output(args.output)  # before the model loads
    _remove_stale_partials(out_path)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    if args.duration is not None:
        x = x[: int(round(args.duration * MODEL_RATE))]
    # Signals wait for these safe points: loading and packing weights are never cut short.
    stop.check()
    engine, source = _load_engine(args)
    stop.check()
    _warm_up(engine)
    stop.check()
    block = args.blocksize or 256
    latency = engine.latency_samples
    stats = Stats(block / MODEL_RATE)
    status = StatusPrinter(args.status_interval)

    written = 0
    consumed = 0
    align = AlignedOutput(latency)

    def emit(writer: Any, y: np.ndarray, limit: int) -> None:
        nonlocal written
        y = align(y)[: max(0, limit - written)]
        if len(y):
            writer.write(y)
            written += len(y)

    mode = "real time" if args.realtime else "as fast as possible"
    print(
        f"streaming {args.input} -> {args.output}: {len(x) / MODEL_RATE:.2f} s, blocks of {block} samples "
        f"({1e3 * block / MODEL_RATE:.1f} ms), {mode}, {source} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    gc.freeze()  # keep full collections of torch's objects out of the timed blocks
    _CLEANUP.append(gc.unfreeze)
    try:
        with atomic_write(out_path) as tmp, _Locked(tmp):
            writer = _open_writer(tmp, args.subtype, display=args.output)
            try:
                t_next = time.monotonic()
                for start in range(0, len(x), block):
                    if stop.requested:  # between blocks: nothing of torch's is in flight
                        break
                    chunk = x[start : start + block]
                    t0 = time.perf_counter()
                    y = engine.process(chunk)
                    stats.add_block(time.perf_counter() - t0, len(chunk) / MODEL_RATE)
                    consumed += len(chunk)
                    emit(writer, y, len(x))
                    status.maybe_print(stats)
                    if args.realtime:
                        t_next += len(chunk) / MODEL_RATE
                        delay = t_next - time.monotonic()
                        if delay > 0:
                            stop.wait(delay)
                emit(writer, engine.flush(), consumed)
                if written < consumed:
                    writer.write(np.zeros(consumed - written, dtype=np.float32))
                    written = consumed
            finally:
                writer.close()
    except (sf.LibsndfileError, OSError) as exc:  # only the writes do I/O in this loop
        reason = write_failure(exc, out_path.parent) or _write_error(exc)
        raise FsnetError(f"cannot write {args.output}: {reason}") from None
    finally:
        status.end()

    interrupted = stop.requested
    summary = {
        "mode": "file",
        "input": args.input,
        "output": args.output,
        "engine": engine.name,
        "sample_rate": MODEL_RATE,
        "blocksize": block,
        "block_ms": 1e3 * block / MODEL_RATE,
        "blocks": stats.blocks,
        "audio_seconds": stats.audio_seconds,
        "samples_in": int(len(x)),
        "samples_written": int(written),
        "compute": stats.compute_stats(),
        "rtf": stats.rtf(),
        "slow_blocks": stats.slow_blocks,
        "algorithmic_latency_samples": latency,
        "algorithmic_latency_ms": 1e3 * latency / MODEL_RATE,
        "stop_reason": f"stopped by {stop.name}" if interrupted else "end of input",
        "interrupted": interrupted,
    }
    summary["warnings"] = _keep_up_warnings(summary) if args.realtime else []
    if interrupted:
        summary["warnings"].append(
            f"interrupted: {args.output} holds the first {written / MODEL_RATE:.2f} s of "
            f"{len(x) / MODEL_RATE:.2f} s"
        )
    _print_summary(summary, args.summary_json)
    if interrupted:
        return exit_status(stop.signum)
    return 0


# --------------------------------------------------------------------------------------- mic mode
class _CStderrCaptured:
    """Send what C libraries write to file descriptor 2 into a temporary file for a while.

    PortAudio's init lets ALSA and libjack print about every host API it cannot use, its ALSA
    backend prints failed assertions when a device refuses a format, and ALSA's PulseAudio
    plugin reports an underrun while a stream starts (before any audio): noise that would be
    the first thing a user reads. After the block, ``lines`` holds it, for an error message.
    """

    def __enter__(self) -> _CStderrCaptured:
        import tempfile

        self.lines: list[str] = []
        self.file = tempfile.TemporaryFile(mode="w+b")
        try:
            self.saved: int | None = os.dup(2)
        except OSError:
            self.saved = None
        if self.saved is not None:
            sys.stderr.flush()
            os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        self.file.seek(0)
        self.lines = self.file.read().decode(errors="replace").strip().splitlines()
        self.file.close()

    def hint(self) -> str:
        """The last captured line, as " (...)" to append to an error, or ""."""
        return f" ({self.lines[-1]})" if self.lines else ""


def _import_sounddevice():
    """Import sounddevice (initialises PortAudio) with the C libraries' probe chatter hidden;
    it is shown only if the import fails."""
    chatter = _CStderrCaptured()
    try:
        with chatter:
            import sounddevice as sd
    except OSError as exc:  # PortAudio library missing
        raise FsnetError(
            f"cannot use audio devices: {exc}{chatter.hint()} (install libportaudio2)"
        ) from exc
    return sd


def _device_list_brief(sd, kind: str) -> str:
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    try:
        devices = sd.query_devices()
    except Exception:  # noqa: BLE001
        return "none"
    names = [f"{i} '{d['name']}' ({d[key]} ch)" for i, d in enumerate(devices) if d[key] > 0]
    return ", ".join(names) if names else "none"


def _parse_device(value: str | None) -> int | str | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else value


def _resolve_device(sd, value: str | None, kind: str) -> tuple[int, dict]:
    device = _parse_device(value)
    if device is None:
        default = sd.default.device[0 if kind == "input" else 1]
        if default is None or (isinstance(default, int) and default < 0):
            raise FsnetError(
                f"no default {kind} device; {kind} devices: {_device_list_brief(sd, kind)}"
            )
        device = default
    try:
        info = sd.query_devices(device, kind)
    except (ValueError, sd.PortAudioError) as exc:
        msg = str(exc).rstrip(".")
        raise FsnetError(
            f"{kind} device {value!r}: {msg}; {kind} devices: {_device_list_brief(sd, kind)}"
        ) from exc
    return int(info["index"]), dict(info)


def list_devices() -> int:
    sd = _import_sounddevice()
    devices = sd.query_devices()
    if not len(devices):
        apis = ", ".join(api["name"] for api in sd.query_hostapis()) or "none"
        print(f"no audio devices found (host APIs: {apis})")
        return 0
    print(devices)
    print("host APIs: " + ", ".join(api["name"] for api in sd.query_hostapis()))
    return 0


def _jack_period() -> int | None:
    """The running JACK server's period (frames), asked through libjack; None if unknown.

    The stream is opened with blocksize 0 so that PortAudio hands over JACK's own buffers (an
    explicit size, even equal to the period, costs a period of latency), but the FIFO is best
    sized before the stream starts. The server is the one PortAudio uses (JACK_DEFAULT_SERVER).
    """
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.jack_get_buffer_size.restype = ctypes.c_uint32
        lib.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
        lib.jack_client_close.argtypes = [ctypes.c_void_p]
        status = ctypes.c_int(0)
        client = lib.jack_client_open(
            b"fsnet_period_probe", 0x01, ctypes.byref(status)
        )  # NoStartServer
        if not client:
            return None
        try:
            return int(lib.jack_get_buffer_size(client)) or None
        finally:
            lib.jack_client_close(client)
    except (OSError, AttributeError):
        return None


def _required_prefill(
    rate: int, blocksize: int, hop: int, quality: str, seconds: float = 10.0
) -> int:
    """Silent device frames the output FIFO must start with so that it never runs dry.

    Simulates the sample counts of one callback after another: the input resampler's output,
    the engine's hop-by-hop output (``floor(in / hop) * hop``) and the output resampler's. The
    counts do not depend on the data, so this is exact for the simulated span (at 16 kHz, or
    an integer rate ratio, the pattern repeats within it; at 44.1 kHz soxr's buffering can
    still peak a few hundred samples higher later on: see LivePipeline.callback).
    """
    import soxr

    rs_in = (
        soxr.ResampleStream(rate, MODEL_RATE, 1, dtype="float32", quality=quality)
        if rate != MODEL_RATE
        else None
    )
    rs_out = (
        soxr.ResampleStream(MODEL_RATE, rate, 1, dtype="float32", quality=quality)
        if rate != MODEL_RATE
        else None
    )
    zeros = np.zeros(blocksize, dtype=np.float32)
    total_in = emitted = produced = worst = 0
    steps = max(200, math.ceil(seconds * rate / blocksize))
    for k in range(1, steps + 1):
        total_in += len(rs_in.resample_chunk(zeros)) if rs_in else blocksize
        ready = (total_in // hop) * hop - emitted
        emitted += ready
        produced += len(rs_out.resample_chunk(np.zeros(ready, np.float32))) if rs_out else ready
        worst = max(worst, k * blocksize - produced)
    return worst


class LivePipeline:
    """Device block -> mono 16 kHz -> engine -> device rate -> FIFO -> every output channel."""

    def __init__(
        self,
        engine: Any,
        rate: int,
        blocksize: int,
        out_channels: int,
        quality: str,
        recorder: Recorder | None,
        stats: Stats,
        threaded: bool,
        queue_blocks: int,
        duration_frames: int | None,
        wake: threading.Event | None = None,
    ) -> None:
        import soxr

        self.engine = engine
        self.rate = rate
        self.blocksize = blocksize
        self.out_channels = out_channels
        self.recorder = recorder
        self.stats = stats
        self.threaded = threaded
        self.duration_frames = duration_frames
        resample = rate != MODEL_RATE
        self.rs_in = (
            soxr.ResampleStream(rate, MODEL_RATE, 1, dtype="float32", quality=quality)
            if resample
            else None
        )
        self.rs_out = (
            soxr.ResampleStream(MODEL_RATE, rate, 1, dtype="float32", quality=quality)
            if resample
            else None
        )
        self.quality = quality
        self.queue_blocks = queue_blocks
        self.lock = threading.Lock()
        self.first_callback = threading.Event()
        self.prefill: int | None = None
        self.grown = 0  # samples of delay added at run time (callback engine), see callback()
        self.grow_events = 0
        self.fifo = Fifo(4 * rate)
        if blocksize:  # the expected size; checked (and if need be redone) at the first callback
            self._start_fifo(blocksize)
        self.frames_in = 0
        self.error: BaseException | None = None
        self.done = threading.Event()  # duration reached, error, or stream finished
        self.wake = wake or threading.Event()  # the main thread sleeps on it
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        if threaded:
            self.worker = threading.Thread(target=self._work_loop, name="fsnet-engine", daemon=True)

    def _start_fifo(self, blocksize: int, seconds: float = 10.0) -> None:
        """Fill the FIFO with the silence this block size needs (see _required_prefill)."""
        self.blocksize = blocksize
        self.stats.block_seconds = blocksize / self.rate
        prefill = _required_prefill(
            self.rate, blocksize, self.engine.hop_samples, self.quality, seconds
        )
        if self.threaded:
            prefill += self.queue_blocks * blocksize
        self.fifo = Fifo(4 * self.rate + 4 * (prefill + blocksize))
        self.fifo.write(np.zeros(prefill, dtype=np.float32))
        self.prefill = prefill

    @property
    def pipeline_latency_s(self) -> float:
        """Delay the program adds besides the model's: the FIFO's initial silence.

        The prefill is the largest shortfall of (resampled, hop-quantised) output against the
        device's demand, so it already contains the resamplers' delay: input-to-output through
        the program is exactly ``prefill`` device frames plus the algorithmic latency.
        """
        return ((self.prefill or 0) + self.grown) / self.rate

    def process_block(self, mono: np.ndarray) -> None:
        """One device block ``mono [n]`` at the device rate: resample to 16 kHz, enhance, resample
        back into the output FIFO, and hand both 16 kHz sides to the recorder."""
        t0 = time.perf_counter()
        x16 = (
            self.rs_in.resample_chunk(mono)
            if self.rs_in
            else np.array(mono, dtype=np.float32, copy=True)
        )
        y16 = self.engine.process(x16) if len(x16) else np.zeros(0, np.float32)
        y = self.rs_out.resample_chunk(y16) if self.rs_out and len(y16) else y16
        with self.lock:
            self.fifo.write(y)
        self.stats.add_block(time.perf_counter() - t0, len(mono) / self.rate)
        if self.recorder is not None:
            self.recorder.put(x16, y16)

    def _work_loop(self) -> None:
        try:
            while True:
                mono = self.work.get()
                if mono is None:
                    return
                self.process_block(mono)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.finished()

    def callback(
        self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any, status: Any
    ) -> None:
        stats = self.stats
        stats.callbacks += 1
        if not self.first_callback.is_set():
            # Nothing has been produced yet, so the FIFO can still be redone for the real size
            # (a short simulation: this runs in the audio thread).
            if self.prefill is None or frames != self.blocksize:
                with self.lock:
                    self._start_fifo(frames, seconds=2.0)
            self.first_callback.set()
        if status:
            startup_underflow = bool(status.output_underflow) and stats.callbacks == 1
            stats.startup_underflows += startup_underflow
            underflow = bool(status.output_underflow) and not startup_underflow
            if len(stats.drop_callbacks) < 20 and (status.input_overflow or underflow):
                stats.drop_callbacks.append(stats.callbacks)
            stats.input_overflows += bool(status.input_overflow)
            stats.output_underflows += underflow
            stats.input_underflows += bool(status.input_underflow)
            stats.output_overflows += bool(status.output_overflow)
        if self.duration_frames is not None and self.frames_in >= self.duration_frames:
            outdata.fill(0.0)  # --duration reached: the main thread is stopping the stream
            self.finished()
            return
        try:
            mono = indata[:, 0] if indata.shape[1] == 1 else indata.mean(axis=1)
            if self.threaded:
                self.work.put(np.array(mono, dtype=np.float32, copy=True))
            else:
                self.process_block(mono)
            with self.lock:
                y = self.fifo.read(frames)
                missing = frames - len(y)
                if missing and not self.threaded:
                    # Synchronous engine: a shortfall is structural (resampler buffering peaking
                    # above the simulated prefill), not lateness. Play silence and keep the
                    # samples: the delay grows by `missing` once and the FIFO then covers it.
                    self.grown += missing
                    self.grow_events += 1
                elif missing:  # worker late: play silence, drop these samples when they come
                    stats.late_blocks += 1
                    if len(stats.drop_callbacks) < 20:
                        stats.drop_callbacks.append(stats.callbacks)
                    self.fifo.skip += missing
            outdata[: len(y)] = y[:, None]
            outdata[len(y) :] = 0.0
        except BaseException as exc:  # noqa: BLE001
            outdata.fill(0.0)
            self.error = exc
            self.finished()
            raise
        self.frames_in += frames
        if self.duration_frames is not None and self.frames_in >= self.duration_frames:
            self.finished()

    def finished(self) -> None:
        self.done.set()
        self.wake.set()

    def finish(self) -> np.ndarray:
        """After the stream stopped: drain the worker, flush the engine; returns the tail (16 kHz)."""
        if self.worker is not None and self.worker.is_alive():
            self.work.put(None)
            self.worker.join()
        return self.engine.flush()


def _choose_format(
    sd, args, in_idx: int, in_info: dict, out_idx: int, out_info: dict
) -> tuple[int, int, int]:
    cin = args.input_channels or min(2, int(in_info["max_input_channels"]))
    cout = args.output_channels or min(2, int(out_info["max_output_channels"]))
    if cin < 1:
        raise FsnetError(f"input device '{in_info['name']}' has no input channels")
    if cout < 1:
        raise FsnetError(f"output device '{out_info['name']}' has no output channels")
    if args.samplerate:
        candidates = [args.samplerate]
    else:
        candidates = [
            MODEL_RATE,
            int(in_info["default_samplerate"]),
            int(out_info["default_samplerate"]),
        ]
    problems = []
    for rate in dict.fromkeys(candidates):
        try:
            with _CStderrCaptured():  # PortAudio's message is in the exception
                sd.check_input_settings(
                    device=in_idx, channels=cin, dtype="float32", samplerate=rate
                )
                sd.check_output_settings(
                    device=out_idx, channels=cout, dtype="float32", samplerate=rate
                )
            return rate, cin, cout
        except sd.PortAudioError as exc:
            problems.append(f"{rate} Hz: {exc}")
    raise FsnetError(
        f"devices '{in_info['name']}' ({cin} ch in) / '{out_info['name']}' ({cout} ch out) refuse "
        f"float32 audio at {', '.join(problems)}"
    )


def _parse_latency(value: str) -> str | float:
    if value in ("low", "high"):
        return value
    try:
        return float(value)
    except ValueError:
        raise FsnetError(f"--latency must be low, high or seconds, got {value!r}") from None


def run_mic(args: argparse.Namespace, stop: StopSignals) -> int:
    sd = _import_sounddevice()
    latency_setting = _parse_latency(args.latency)
    in_idx, in_info = _resolve_device(sd, args.input_device, "input")
    out_idx, out_info = _resolve_device(sd, args.output_device, "output")
    rate, cin, cout = _choose_format(sd, args, in_idx, in_info, out_idx, out_info)
    hostapi = sd.query_hostapis(in_info["hostapi"])["name"]
    if args.blocksize:
        blocksize = args.blocksize
    elif "JACK" in hostapi:
        # 0: PortAudio calls back once per JACK period with exactly the period's frames. A fixed
        # size that is not the period makes it call back 0, 1 or 2 times in a cycle (xruns).
        blocksize = 0
        expected_blocksize = _jack_period()
    else:
        blocksize = max(1, round(256 * rate / MODEL_RATE))  # one 16 ms hop
    if blocksize:
        expected_blocksize = blocksize

    engine, source = _load_engine(args)
    _warm_up(engine)
    recorder = None
    if args.record or args.record_noisy:
        recorder = Recorder(args.record_noisy, args.record, args.subtype, engine.latency_samples)
    stats = Stats((expected_blocksize or 256 * rate / MODEL_RATE) / rate)
    duration_frames = int(round(args.duration * rate)) if args.duration else None
    pipe = LivePipeline(
        engine,
        rate,
        expected_blocksize or 0,
        cout,
        args.resample_quality,
        recorder,
        stats,
        threaded=args.engine == "thread",
        queue_blocks=args.queue_blocks,
        duration_frames=duration_frames,
    )
    status = StatusPrinter(args.status_interval)
    device_latency = (0.0, 0.0)
    stop_reason = "duration reached"
    tail = None
    failure: FsnetError | None = None
    stop.check()
    try:
        try:
            with _CStderrCaptured():  # PortAudio's message is in the exception
                stream = sd.Stream(
                    samplerate=rate,
                    blocksize=blocksize,
                    device=(in_idx, out_idx),
                    channels=(cin, cout),
                    dtype="float32",
                    latency=latency_setting,
                    callback=pipe.callback,
                    finished_callback=pipe.finished,
                )
        except (sd.PortAudioError, ValueError) as exc:
            raise FsnetError(
                f"cannot open audio stream '{in_info['name']}' -> '{out_info['name']}' at {rate} Hz, "
                f"{cin}/{cout} ch, blocks of {blocksize}: {exc}"
            ) from exc
        with stream:
            if pipe.worker is not None:
                # the audio callback needs the GIL the worker holds between torch ops: hand it
                # over sooner than the default 5 ms
                previous = sys.getswitchinterval()
                _CLEANUP.append(lambda: sys.setswitchinterval(previous))
                sys.setswitchinterval(0.0005)
                pipe.worker.start()
            chatter = _CStderrCaptured()
            try:
                with chatter:
                    stream.start()
                    started = pipe.first_callback.wait(10.0)
            except sd.PortAudioError as exc:
                raise FsnetError(f"cannot start audio stream: {exc}{chatter.hint()}") from exc
            device_latency = tuple(float(v) for v in stream.latency)
            if not started:
                raise FsnetError(
                    f"the audio stream '{in_info['name']}' -> '{out_info['name']}' started but "
                    f"delivers no audio{chatter.hint()} (is the device or the JACK server running?)"
                )
            blocksize = pipe.blocksize
            print(
                f"listening: '{in_info['name']}' ({cin} ch) -> '{out_info['name']}' ({cout} ch) at {rate} Hz, "
                f"blocks of {blocksize} ({1e3 * blocksize / rate:.1f} ms), engine in {args.engine}, {source}; "
                f"latency {engine.latency_samples / MODEL_RATE * 1e3:.1f} ms algorithmic + "
                f"{pipe.pipeline_latency_s * 1e3:.1f} ms buffering (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            gc.freeze()  # a full collection of torch's objects takes ~100 ms: not in the callback
            _CLEANUP.append(gc.unfreeze)
            # Signals are collected here, in slices of at most 0.1 s so that the end of the
            # stream is noticed too; each wake-up briefly takes the GIL the audio callback needs.
            while not pipe.done.is_set() and not stop.wait(min(0.1, status.seconds_to_next())):
                status.maybe_print(stats)
            if stop.requested:
                stop_reason = f"stopped by {stop.name}"
            elif pipe.error is None and not (duration_frames and pipe.frames_in >= duration_frames):
                stop_reason = "audio stream ended"
            if pipe.error is not None:
                stream.abort()
            else:
                stream.stop()
    except FsnetError as exc:
        failure = exc
    finally:
        status.end()
        try:
            tail = pipe.finish()
        finally:
            if recorder is not None:
                recorder.close(tail)
    if failure is not None:
        if recorder is not None:
            recorder.discard()
        raise failure
    if pipe.error is not None:
        raise FsnetError(f"audio processing failed: {type(pipe.error).__name__}: {pipe.error}")

    summary = {
        "mode": "mic",
        "engine": engine.name,
        "engine_thread": args.engine,
        "input_device": in_info["name"],
        "output_device": out_info["name"],
        "device_rate": rate,
        "input_channels": cin,
        "output_channels": cout,
        "blocksize": pipe.blocksize,
        "block_ms": 1e3 * pipe.blocksize / rate,
        "blocks": stats.blocks,
        "callbacks": stats.callbacks,
        "audio_seconds": stats.audio_seconds,
        "compute": stats.compute_stats(),
        "rtf": stats.rtf(),
        "input_overflows": stats.input_overflows,
        "output_underflows": stats.output_underflows,
        "startup_output_underflows": stats.startup_underflows,
        "input_underflows": stats.input_underflows,
        "output_overflows": stats.output_overflows,
        "late_blocks": stats.late_blocks,
        "slow_blocks": stats.slow_blocks,
        "nonfinite_input_samples": getattr(engine, "nonfinite_samples", 0),
        "late_samples_dropped": pipe.fifo.dropped,
        "drop_callbacks": stats.drop_callbacks,
        "algorithmic_latency_samples": engine.latency_samples,
        "algorithmic_latency_ms": 1e3 * engine.latency_samples / MODEL_RATE,
        "prefill_frames": pipe.prefill or 0,
        "delay_grown_frames": pipe.grown,
        "delay_grow_events": pipe.grow_events,
        "pipeline_latency_ms": 1e3 * pipe.pipeline_latency_s,
        "device_latency_ms": [1e3 * device_latency[0], 1e3 * device_latency[1]],
        "resample_quality": args.resample_quality if rate != MODEL_RATE else None,
        "recorded": {"noisy": args.record_noisy, "enhanced": args.record},
        "stop_reason": stop_reason,
    }
    summary["warnings"] = _keep_up_warnings(summary)
    _print_summary(summary, args.summary_json)
    return 0


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    with StopSignals(blocked=True) as stop:
        try:
            args = build_parser().parse_args(argv)
            _check_args(args)
            if args.list_devices:
                return list_devices()
            if args.mic:
                return run_mic(args, stop)
            return run_file(args, stop)
        except FsnetError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        except Stopped as exc:
            print(
                f"stopped by {stop.name or exc} before streaming started",
                file=sys.stderr,
                flush=True,
            )
            return exit_status(exc.signum)
        finally:
            while _CLEANUP:
                _CLEANUP.pop()()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
