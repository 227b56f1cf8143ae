"""Training-health monitors read at validation, where the host waits for the GPU anyway."""

from __future__ import annotations

import logging
from typing import Any

import torch

try:
    import pytorch_lightning as pl
except ImportError:  # the unified ``lightning`` package
    import lightning.pytorch as pl  # type: ignore[no-redef]

log = logging.getLogger("fsnet.train")


class SubbandActivity(pl.Callback):
    """Logs ``val/subband_active``: the share of the sub-band model's outputs above zero over the
    validation pass.

    The sub-band model ends in a ReLU on one unit per band. Once that unit is negative for every
    input it gets no gradient and stays dead: the mask then comes from the full-band layers alone
    and most of the network's arithmetic is wasted (stage 18 of recipes/debian_audio shipped like that).
    A share of 0 is also reported as a warning, so a run shows it long before its metrics do.
    """

    def __init__(self):
        self._handle: Any = None
        self._active = self._total = None

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._active = self._total = None
        self._handle = pl_module.model.bottleneck.register_forward_hook(self._count)

    def _count(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        y = output[0].detach()
        active = (y > 0).sum()
        self._active = active if self._active is None else self._active + active
        self._total = y.numel() + (self._total or 0)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if not self._total or trainer.sanity_checking:
            return
        share = float(self._active) / self._total
        pl_module.log("val/subband_active", share, sync_dist=True)
        if share == 0.0:
            log.warning(
                "the sub-band model's output is 0 for every frame and band of the validation set"
                " (its ReLU is dead): the mask comes from the full-band layers alone"
            )
