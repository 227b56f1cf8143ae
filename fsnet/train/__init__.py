"""Training: ``python train.py recipe=dns [overrides]``, Hydra-composed Lightning training of Fast
FullSubNet (the LightningModule itself is :mod:`fsnet.system`).

- :mod:`~fsnet.train.checks`: the checks before a run starts (config values, run folder, resume);
- :mod:`~fsnet.train.run`: ``build`` / ``fit`` / ``finish`` and ``train(cfg) -> summary``;
- :mod:`~fsnet.train.cli`: ``main()``, the command line (also ``fsnet-train``).
"""

from fsnet.train.checks import (
    CONFIG_DIR,
    CONFIG_NAME,
    check_run_folder,
    preflight,
    resume_checkpoint,
)
from fsnet.train.cli import main
from fsnet.train.run import Run, build, finish, fit, train

__all__ = [
    "CONFIG_DIR",
    "CONFIG_NAME",
    "Run",
    "build",
    "check_run_folder",
    "finish",
    "fit",
    "main",
    "preflight",
    "resume_checkpoint",
    "train",
]
