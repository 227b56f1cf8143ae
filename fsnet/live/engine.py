"""What the live tool runs each block through: the model (with the ``--dry`` mix) or nothing."""

from __future__ import annotations

import argparse
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import numpy as np

from fsnet.audio import SAMPLE_RATE
from fsnet.errors import FsnetError


def to_numpy(y: Any) -> np.ndarray:
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
            size = self.size
            grown[:size] = self.read(size)  # read() empties the buffer: keep its size
            self.buf, self.start, self.size = grown, 0, size
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

    def __init__(self, model: Any, dry: float = 0.0, shaping: Any = None) -> None:
        from fsnet.streaming import StreamingEnhancer

        self.enhancer = StreamingEnhancer(model, shaping=shaping)  # a MaskShaping, or None
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
        y = to_numpy(y).copy()  # owned: the recorder's queue keeps it while the engine runs on
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


def load_engine(args: argparse.Namespace, undo: contextlib.ExitStack) -> tuple[Any, str]:
    """The engine ``args`` ask for and a description of its source; ``undo`` gets the reset of
    torch's thread count."""
    if args.passthrough:
        return PassthroughEngine(), "passthrough (no model)"
    import torch

    if torch.get_num_threads() != args.threads:
        previous = torch.get_num_threads()
        undo.callback(torch.set_num_threads, previous)
        torch.set_num_threads(args.threads)
    from fsnet.checkpoint import load_model

    try:
        model = load_model(args.checkpoint)
    except FsnetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user problem
        raise FsnetError(f"cannot load checkpoint {args.checkpoint or '(bundled)'}: {exc}") from exc
    if model.config.sample_rate != SAMPLE_RATE:
        # Resampling, recording and timing here are all at SAMPLE_RATE.
        raise FsnetError(
            f"{args.checkpoint} is a {model.config.sample_rate} Hz model; stream_infer runs "
            f"{SAMPLE_RATE} Hz models (enhance other rates with fsnet.enhance)"
        )
    model.eval()
    source = args.checkpoint or "bundled model"
    if args.shaping.active:
        source += f" ({args.shaping.describe()})"
    return ModelEngine(model, dry=args.dry, shaping=args.shaping), source


def warm_up(engine: Any, blocks: int = 8) -> None:
    """Run a few silent hops so the first real block does not pay for lazy initialisation."""
    hop = max(engine.hop_samples, 256)
    for _ in range(blocks):
        engine.process(np.zeros(hop, dtype=np.float32))
    engine.flush()
    engine.reset()


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the objects that exist now (torch's, the model's) out of garbage collections: a full
    collection of them takes ~100 ms, which must not land in a timed block or audio callback."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
