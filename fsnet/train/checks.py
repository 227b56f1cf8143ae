"""Checks before a training starts: the composed config, the run folder, the checkpoint to resume.

Each turns what would fail deep inside Hydra, Lightning or torch (a traceback, long after start-up)
into one FsnetError line now.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fsnet.cli import one_line
from fsnet.errors import FsnetError

CONFIG_DIR = Path(
    os.environ.get("FSNET_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs")
)
CONFIG_NAME = "train"


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (FsnetError, HydraException, OmegaConfBaseException)


def preflight(overrides: list[str]) -> str | None:
    """Compose the config once with Hydra's compose API and check that the run folder can be
    written; the problem as one line, or None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(
            config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"
        ):
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
            check_run_folder(Path(str(cfg.hydra.run.dir)))
    except _user_errors() as exc:
        return one_line(exc)
    finally:
        GlobalHydra.instance().clear()
    return None


def check_run_folder(run_dir: Path) -> None:
    """FsnetError unless ``run_dir`` can be created and written (Hydra would otherwise stop with a
    traceback from its own mkdir): a file is created and removed in the nearest existing folder."""
    path = Path(os.path.abspath(run_dir))
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise FsnetError(f"cannot write run folder {path}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fsnet-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FsnetError(f"cannot write run folder {path}: {exc.strerror or exc}") from None


def resume_checkpoint(resume: Any, output_dir: Path) -> Path | None:
    """``resume``: true (last.ckpt of this run if present), false/null, or a checkpoint path."""
    if (
        resume is None
        or resume is False
        or str(resume).lower() in ("false", "no", "none", "null", "")
    ):
        return None
    if resume is True or str(resume).lower() in ("true", "yes", "last"):
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            return None
        _check_resumable(last, "delete it or pass resume=false to start this run folder afresh")
        return last
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise FsnetError(
            f"resume checkpoint {path} does not exist (resume=true|false|<path to .ckpt>)"
        )
    _check_resumable(path, "resume takes a Lightning .ckpt written by train.py")
    return path


def _check_resumable(path: Path, hint: str) -> None:
    """One line now, rather than a traceback from inside ``Trainer.fit``, for a file that
    cannot be resumed (truncated by a crash during a save, or not a training checkpoint)."""
    from fsnet.checkpoint import read_checkpoint

    try:
        payload = read_checkpoint(path)
    except FsnetError as exc:
        raise FsnetError(f"cannot resume: {exc}; {hint}") from None
    if not isinstance(payload, dict) or "pytorch-lightning_version" not in payload:
        raise FsnetError(
            f"cannot resume from {path}: not a Lightning training checkpoint (a release file "
            f"can warm-start a new run with init_from=...); {hint}"
        )


def _check_scalars(cfg: Any) -> None:
    """Values that would otherwise fail deep inside Lightning or torch, long after start-up."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FsnetError(f"seed must be an integer, got {seed!r}")
    lr = cfg.get("optimizer", {}).get("lr")
    if lr is not None and (isinstance(lr, (bool, str)) or not float(lr) > 0):
        raise FsnetError(f"optimizer.lr must be a number > 0, got {lr!r}")
    trainer = cfg.get("trainer") or {}
    # Lightning checks these with bare asserts or compares them with ints deep inside fit()
    for key in ("max_epochs", "max_steps", "min_epochs", "min_steps", "log_every_n_steps"):
        if not _whole_or_none(trainer.get(key)):
            raise FsnetError(f"trainer.{key} must be a whole number, got {trainer.get(key)!r}")
    for key in ("val_check_interval", "limit_train_batches", "limit_val_batches"):
        value = trainer.get(key)
        if value is not None and (
            isinstance(value, (bool, str)) or not isinstance(value, (int, float)) or value < 0
        ):
            raise FsnetError(
                f"trainer.{key} must be a number >= 0 (a fraction, or a count of batches), got {value!r}"
            )
    if trainer.get("limit_val_batches") == 0:
        raise FsnetError(
            "trainer.limit_val_batches=0 turns validation off, and with it the best checkpoint and"
            " release file; use a small number of batches instead"
        )
    optimizer = cfg.get("optimizer") or {}
    if (
        str(trainer.get("precision")) in ("16-mixed", "16")
        and optimizer.get("fused")
        and trainer.get("gradient_clip_val")
    ):
        # Lightning unscales fp16 gradients for clipping; a fused optimiser unscales in its step
        raise FsnetError(
            "trainer.precision=16-mixed cannot clip the gradients of a fused optimiser; set "
            "optimizer.fused=false or use trainer.precision=bf16-mixed"
        )
    if cfg.get("init_reopen_subband") and not cfg.get("init_from"):
        raise FsnetError(
            "init_reopen_subband=true acts on the init_from weights; set init_from=..."
        )
    total_iters = (cfg.get("lr_scheduler") or {}).get("total_iters")
    if not _whole_or_none(total_iters, minimum=1):
        raise FsnetError(
            f"lr_scheduler.total_iters must be a whole number >= 1, got {total_iters!r}"
        )


def _whole_or_none(value: Any, minimum: int | None = None) -> bool:
    """Whether a config value is unset or an int (not a bool) of at least ``minimum``."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return minimum is None or value >= minimum
