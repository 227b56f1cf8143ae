"""How training writes and reads its Lightning checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from fsnet.files import atomic_write

try:
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.io import TorchCheckpointIO
except ImportError:  # the unified ``lightning`` package
    import lightning.pytorch as pl  # type: ignore[no-redef]
    from lightning.pytorch.plugins.io import TorchCheckpointIO  # type: ignore[no-redef]

log = logging.getLogger("fsnet.train")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer: temp file in the same folder, fsync, rename.

    Lightning's own writer stages the file in the system temp folder and *moves* it, which is a
    copy when that folder is on another file system: a kill mid-copy leaves a truncated
    ``last.ckpt``. Here a kill at any moment leaves the previous checkpoint or the new one.
    Resuming reads through :func:`fsnet.checkpoint.read_checkpoint` (plain data only).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resume reads the file as plain data whatever ``weights_only`` Lightning passes (its
        None leaves the choice to torch and to ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): a
        checkpoint that pickles code is refused in one line, never run."""
        from fsnet.checkpoint import read_checkpoint

        return read_checkpoint(path, map_location=map_location or "cpu")


class InterruptCheckpoint(pl.Callback):
    """On Ctrl-C or SIGTERM, write ``<dirpath>/last.ckpt`` of the state training stopped in.

    Otherwise everything since the last validation (or ``every_n_train_steps`` save) is lost, and
    ``resume=true`` would start from there. Other exceptions (a NaN loss, a crash) write nothing:
    that state is not worth resuming and must not overwrite the previous ``last.ckpt``.
    """

    def __init__(self, dirpath: str | os.PathLike, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if trainer.global_step == 0:
            return  # nothing trained yet; keep whatever is there
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            log.info(
                "interrupted at step %d: saved %s (resume=true continues from it)",
                trainer.global_step,
                self.path,
            )
