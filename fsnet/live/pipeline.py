"""The --mic signal path: device block -> 16 kHz mono -> engine -> device rate -> FIFO -> device."""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Any

import numpy as np

from fsnet.audio import SAMPLE_RATE
from fsnet.live.engine import Fifo
from fsnet.live.record import Recorder
from fsnet.live.report import Stats


def required_prefill(
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
        soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=quality)
        if rate != SAMPLE_RATE
        else None
    )
    rs_out = (
        soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32", quality=quality)
        if rate != SAMPLE_RATE
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
        resample = rate != SAMPLE_RATE
        self.rs_in = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=quality)
            if resample
            else None
        )
        self.rs_out = (
            soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32", quality=quality)
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
        """Fill the FIFO with the silence this block size needs (see required_prefill)."""
        self.blocksize = blocksize
        self.stats.block_seconds = blocksize / self.rate
        prefill = required_prefill(
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
        stats.note_device_delay(time_info)
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
