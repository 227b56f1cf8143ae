"""How training writes and reads its Lightning checkpoints."""

from __future__ import annotations

import os
from typing import Any

import torch

from fsnet.files import atomic_write

try:
    from pytorch_lightning.plugins.io import TorchCheckpointIO
except ImportError:  # the unified ``lightning`` package
    from lightning.pytorch.plugins.io import TorchCheckpointIO  # type: ignore[no-redef]


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
