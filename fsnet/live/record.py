"""Output files of the live tool: checked before the model loads, and the --mic recorder."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

from fsnet.audio import SAMPLE_RATE
from fsnet.errors import FsnetError
from fsnet.streaming import AlignedOutput


def write_error(exc: BaseException) -> str:
    """The reason in a write error, without the (possibly temporary) file name."""
    return (
        getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    ).strip()


def prepare_output(path: str) -> None:
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
        raise FsnetError(f"cannot write {path}: {write_error(exc)}") from None


def open_writer(path: str | Path, subtype: str | None, display: str | None = None):
    """A 16 kHz mono SoundFile at ``path`` (its folder created unless ``display`` is given: a
    temporary name for the user's file ``display``, which the errors name instead)."""
    import soundfile as sf

    from fsnet.audio import output_format

    fmt, subtype = output_format(display or path, subtype, SAMPLE_RATE)
    if display is None:
        display = str(path)
        prepare_output(display)
    try:
        return sf.SoundFile(
            str(path), "w", samplerate=SAMPLE_RATE, channels=1, subtype=subtype, format=fmt
        )
    except (sf.LibsndfileError, OSError, RuntimeError) as exc:
        raise FsnetError(f"cannot write {display}: {write_error(exc)}") from None


class Recorder:
    """Writes the capture and the (time-aligned) enhanced signal progressively, off the audio thread.

    The enhanced signal is on the engine's timeline; its first ``latency`` samples (before the
    first input sample) are dropped so both files line up sample for sample. At close the
    enhanced file is cut/padded to the noisy length.
    """

    def __init__(
        self, noisy_path: str | None, out_path: str | None, subtype: str | None, latency: int
    ) -> None:
        self.noisy = open_writer(noisy_path, subtype) if noisy_path else None
        try:
            self.out = open_writer(out_path, subtype) if out_path else None
        except FsnetError:
            if self.noisy:
                self.noisy.close()
            raise
        self.paths = {"noisy": noisy_path, "out": out_path}
        self.align = AlignedOutput(latency)  # drops what precedes the first input sample
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
            out = self.align(out)
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
                # aligned, then no more than the capture's length
                tail = self.align(tail)[: max(0, self.noisy_count - self.out_count)]
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
