"""A Lightning callback that times ``train.py``'s training steps after a warm-up, for benchmarks.

Added to a run from the command line (``benchmarks/loop_runs.py`` does this)::

    PYTHONPATH=benchmarks python train.py ... +callbacks.step_timer._target_=step_timer.StepTimer \\
        +callbacks.step_timer.path=RUN/step_times.json +callbacks.step_timer.warmup_steps=50

It measures the loop as it runs, whatever the system does inside a step (graphs, GPU mixing):
the wall time from the end of batch ``warmup_steps`` to the end of the last batch, with the GPU
synchronised at both ends, so the queued work is counted. Between them nothing waits for the GPU
(the loop's own speed), and each batch end's host time is kept to show stalls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl  # type: ignore[no-redef]


class StepTimer(pl.Callback):
    """Writes ``{"steps", "seconds", "batch_end_seconds", ...}`` as JSON to ``path`` at the last
    training batch (``trainer.max_steps``) or, if training ends earlier, when it ends."""

    def __init__(self, path: str, warmup_steps: int = 50):
        self.path = Path(path)
        self.warmup_steps = int(warmup_steps)
        self.batches = 0
        self.start: float | None = None
        self.ends: list[float] = []
        self.written = False

    @staticmethod
    def _sync(pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup_steps:
            self._sync(pl_module)
            self.start = time.perf_counter()
        elif self.start is not None:
            self.ends.append(time.perf_counter() - self.start)
            if self.batches == trainer.max_steps:
                self._write(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.written:
            self._write(pl_module)

    def _write(self, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self.start if self.start is not None else 0.0
        result = {
            "warmup_steps": self.warmup_steps,
            "steps": len(self.ends),
            "seconds": seconds,
            "batch_end_seconds": self.ends,  # host time of each batch end after the warm-up
            "device": str(pl_module.device),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(result))
        self.written = True
