"""``python train.py recipe=dns [overrides]``: Hydra-composed Lightning training of Fast FullSubNet.

``main()`` is the command line (also ``fsnet-train``); ``train(cfg)`` runs one training from a
composed config and returns a summary dict. Any problem the user can fix (bad path, bad key, bad
data) ends with one ``error: ...`` line and exit status 1; ``HYDRA_FULL_ERROR=1`` shows the full
traceback instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from fsnet.errors import FsnetError, fsnet_cause
from fsnet.interrupts import interrupts_held

log = logging.getLogger("fsnet.train")

CONFIG_DIR = Path(
    os.environ.get("FSNET_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs")
)
CONFIG_NAME = "train"


# ------------------------------------------------------------------------------------ errors
def _squash(text: str) -> str:
    """Join lines; drop OmegaConf's ``full_key: ... object_type=...`` detail lines."""
    text = text.split("Config search path:")[
        0
    ]  # Hydra appends its search path to "not found" errors
    keep = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.strip().startswith(("full_key:", "object_type=", "reference_type="))
    ]
    return " ".join(" ".join(keep).split())


def one_line(exc: BaseException) -> str:
    """A readable single line for an exception (DataLoader worker wrappers and Hydra chains included)."""
    cause = fsnet_cause(exc)
    if cause is not None and cause is not exc:
        return _squash(str(cause))  # Hydra's "Error in call to target ..." adds nothing
    message = str(exc)
    if (
        "Original Traceback" in message
    ):  # re-raised from a DataLoader worker: keep the original message
        lines = [line for line in message.splitlines() if line.strip()]
        message = lines[-1] if lines else message
        for prefix in ("fsnet.errors.FsnetError: ", "FsnetError: "):
            message = message.removeprefix(prefix)
    parts = [_squash(message)]
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    seen = {id(exc)}
    while cause is not None and id(cause) not in seen and len(parts) < 3:
        seen.add(id(cause))
        text = _squash(str(cause))
        if text and text not in parts[-1]:
            parts.append(text)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    line = ": ".join(p for p in parts if p)
    return line or type(exc).__name__


def _fail(exc: BaseException) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
    sys.exit(1)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (FsnetError, HydraException, OmegaConfBaseException)


def preflight(overrides: list[str]) -> str | None:
    """Compose the config once with Hydra's compose API; the problem as one line, or None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(
            config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"
        ):
            compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
    except _user_errors() as exc:
        return one_line(exc)
    finally:
        GlobalHydra.instance().clear()
    return None


# ------------------------------------------------------------------------------------ training
def _to_plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


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
    from fsnet.checkpoint import _read

    try:
        payload = _read(path)
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


def _instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with Ctrl-C held until it returns: OmegaConf interrupted while
    it sets a node's flags leaves the node broken, and the interrupt then surfaces as an internal
    error ("'NoneType' object has no attribute '_invalidate_flags_cache'", exit 1)."""
    from hydra.utils import instantiate

    with interrupts_held():
        return instantiate(node, **kwargs)


def _instantiate_group(group: Any) -> list[Any]:
    if not group:
        return []
    return [
        _instantiate(node) for node in group.values() if node is not None and node.get("_target_")
    ]


def train(cfg: Any) -> dict[str, Any]:
    """Train from a composed config (``configs/train.yaml``); returns a summary (also on non-zero ranks).

    Rank 0 also writes ``<output_dir>/train_summary.json`` and, if ``export_release``, the release
    file ``<output_dir>/release.pt`` made from the best checkpoint (or the final weights).
    """
    import torch

    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.11 deprecates, twice per run;
    # nothing for the user to act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    with interrupts_held():  # Lightning loads more of torch's C++ side (see fsnet.interrupts)
        try:
            import pytorch_lightning as pl
            from pytorch_lightning.callbacks import (
                LearningRateMonitor,
                ModelCheckpoint,
                ProgressBar,
            )
        except ImportError:  # pragma: no cover
            import lightning.pytorch as pl  # type: ignore[no-redef]
            from lightning.pytorch.callbacks import (  # type: ignore[no-redef]
                LearningRateMonitor,
                ModelCheckpoint,
                ProgressBar,
            )

    from fsnet.checkpoint import load_model, save_release
    from fsnet.config import as_config
    from fsnet.system import AtomicCheckpointIO, EnhancementSystem

    _RUN_STATE["fit_started"] = False  # this call's own state, also when train() runs again
    output_dir = Path(cfg.paths.output_dir).resolve()
    model_config = as_config(_to_plain(cfg.model))
    _check_scalars(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 parts on Ampere+

    datamodule = _instantiate(cfg.data)
    if datamodule.mixing.sample_rate != model_config.sample_rate:
        # the release file would be labelled with the model's rate but trained on the data's
        raise FsnetError(
            f"data.mixing.sample_rate ({datamodule.mixing.sample_rate}) and model.sample_rate "
            f"({model_config.sample_rate}) differ; set both"
        )
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.scan()  # stops here with one line if the corpus is missing or malformed
    optimizer = _instantiate(cfg.optimizer)
    system_options = _to_plain(cfg.get("system")) or {}
    if system_options.get("cuda_graph"):
        # The loader's pin-memory thread calls into CUDA while the graphs are being captured,
        # which invalidates the capture; without pinning, batches copy from pageable memory.
        datamodule.pin_memory = False
    lr_scheduler = _instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None
    system = EnhancementSystem(
        model_config.to_dict(), optimizer=optimizer, lr_scheduler=lr_scheduler, **system_options
    )

    loggers = _instantiate_group(cfg.get("logger"))
    callbacks = _instantiate_group(cfg.get("callbacks"))
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # Lightning also ranks checkpoints by its own "epoch" and "step" counters
    logged = {"val/loss", "val/num_utterances", "epoch", "step"} | {
        f"val/{m}" for m in system.metric_names
    }
    for c in callbacks:
        if isinstance(c, ModelCheckpoint) and c.monitor and c.monitor not in logged:
            raise FsnetError(
                f"a checkpoint callback monitors {c.monitor}, which is not logged (logged: {sorted(logged)}); "
                "add it to system.metrics or set callbacks.model_checkpoint.monitor=val/loss "
                "callbacks.model_checkpoint.mode=min"
            )
    if cfg.trainer.get("fast_dev_run"):
        # a smoke run writes no checkpoints; Lightning's train-end save_last would still write
        # last.ckpt, over the real one when the smoke run shares a run folder
        for c in callbacks:
            if isinstance(c, ModelCheckpoint):
                c.save_last = False
    trainer = _instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers if loggers else False,
        plugins=[AtomicCheckpointIO()],
    )

    ckpt_path = resume_checkpoint(cfg.get("resume"), output_dir)
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
        # expected when resuming: the checkpoint folder of this run holds the earlier checkpoints
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    init_from = cfg.get("init_from")
    if init_from and ckpt_path is None:
        # Warm start (fine-tuning, or continuing on a new machine from a release file): weights
        # only; the optimiser, step count and schedule start afresh.
        source = load_model(str(init_from))
        if source.config != model_config:
            raise FsnetError(
                f"init_from={init_from} holds a different network than the model config"
            )
        system.model.load_state_dict(source.state_dict())
        log.info("initialised weights from %s", init_from)
    model_params = sum(p.numel() for p in system.model.parameters())
    log.info(
        "model: %d parameters, %s; output folder: %s",
        model_params,
        model_config.to_dict(),
        output_dir,
    )

    stop_signal = None
    # from here on the run folder may hold its logs and checkpoints
    _RUN_STATE["fit_started"] = True
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except ValueError as exc:
        # Lightning checks val_check_interval against the epoch's batches only once fit() has
        # built the loader; its message already names both numbers.
        if "val_check_interval" not in str(exc):
            raise
        detail = " ".join(str(exc).split()).split(". ")[0]
        raise FsnetError(
            f"trainer.val_check_interval: {detail.replace('`', '')} (per GPU); lower it or set"
            " trainer.check_val_every_n_epoch=null"
        ) from None
    except SystemExit as exc:
        # Lightning ends fit() on Ctrl-C with sys.exit(1) and on SIGTERM with a SystemExit of
        # status 0; finish the run's summary and release file, then exit 128 + signal below.
        if not trainer.interrupted:
            raise
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        stop_signal = "SIGTERM" if isinstance(exc, SIGTERMException) else "SIGINT"
    except RuntimeError as exc:
        if ckpt_path is not None and "state_dict" in str(exc):
            text = " ".join(str(exc).split())
            found = re.search(
                r"size mismatch for [^:]+|(Missing|Unexpected) key\(s\) in state_dict", text
            )
            detail = found.group(0) if found else text[:160]
            raise FsnetError(
                f"cannot resume from {ckpt_path}: it holds a different network than the model config "
                f"({detail}); use resume=false or another hydra.run.dir"
            ) from None
        raise

    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    ranked = next((c for c in checkpoints if c.monitor), None)
    newest = next((c for c in checkpoints if not c.monitor), None)
    best_path = ranked.best_model_path if ranked is not None else ""
    best_score = ranked.best_model_score if ranked is not None else None
    last_path = (newest.best_model_path if newest is not None else "") or (
        ranked.last_model_path if ranked is not None else ""
    )
    score = (
        float(best_score) if best_score is not None and math.isfinite(float(best_score)) else None
    )
    monitor = ranked.monitor if ranked is not None else None
    summary: dict[str, Any] = {
        "output_dir": str(output_dir),
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.current_epoch),
        "interrupted": bool(trainer.interrupted),
        "stopped_by": stop_signal,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "best_model_path": best_path or None,
        "monitor": monitor,  # what "best" means: the ranked checkpoint's metric
        "best_score": score,
        "best_pesq_wb": score if monitor == "val/pesq_wb" else None,
        "last_model_path": last_path or None,
        "release_path": None,
        "parameters": model_params,
    }
    # An interrupt while the results are written would leave a run with checkpoints but no release
    # file or summary; it waits until they are complete (then main() reports it).
    nothing_trained = stop_signal is not None and trainer.global_step == 0
    with interrupts_held():
        if trainer.is_global_zero:
            if nothing_trained:
                log.info("interrupted before the first training step: no release.pt written")
            elif (
                cfg.get("export_release", True) and not trainer.fast_dev_run
            ):  # a smoke run exports nothing
                if best_path and Path(best_path).is_file():
                    model = load_model(best_path)
                    source = best_path
                else:
                    if best_path:  # e.g. a run folder whose last.ckpt predates its newest best
                        log.warning(
                            "best checkpoint %s no longer exists; release.pt holds the final weights "
                            "(export another checkpoint with python -m fsnet.checkpoint CKPT OUT.pt)",
                            best_path,
                        )
                    model = system.model.float().cpu().eval()
                    source = "final weights"
                release = save_release(model, output_dir / "release.pt")
                summary["release_path"] = str(release)
                log.info("release file %s written from %s", release, source)
            (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            log.info(
                "done: step %d, epoch %d, best %s %s (%s)",
                summary["global_step"],
                summary["epoch"],
                monitor,
                score,
                best_path or "no checkpoint",
            )
    if stop_signal is not None:
        if nothing_trained and ckpt_path is not None:  # stopped before the checkpoint was restored
            log.info(
                "stopped by %s before training resumed; the same command resumes from %s",
                stop_signal,
                ckpt_path,
            )
        elif nothing_trained:
            log.info("stopped by %s before the first training step; nothing to resume", stop_signal)
        else:
            log.info("stopped by %s; resume=true continues from last.ckpt", stop_signal)
        sys.exit(143 if stop_signal == "SIGTERM" else 130)
    return summary


# ------------------------------------------------------------------------------------ CLI
# Whether train() reached fit(): before that, a refused run has written nothing worth keeping.
_RUN_STATE = {"fit_started": False}


def _hydra_entry(cfg: Any) -> None:
    try:
        train(cfg)
    except _user_errors() as exc:
        _remove_empty_run_folder()
        _fail(exc)
    except KeyboardInterrupt:  # Ctrl-C before fit(): nothing of the run to keep either
        _remove_empty_run_folder()
        raise


def _remove_empty_run_folder() -> None:
    """A run refused before fit() leaves only what Hydra wrote: its config snapshot and a log of
    start-up lines (the error itself goes to stderr). Remove those files, then the folders if they
    are empty, so failed attempts do not pile up beside real runs; anything else in the folder
    (the user's own files, a redirected console log) keeps it."""
    from hydra.core.hydra_config import HydraConfig

    if (
        _RUN_STATE["fit_started"]
        or int(os.environ.get("LOCAL_RANK", "0")) > 0
        or os.environ.get("HYDRA_FULL_ERROR") == "1"  # debugging: keep everything
    ):
        return
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under hydra.main (the API)
        return
    run_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    if run_dir == Path.cwd().resolve():
        return
    logging.shutdown()  # closes the log file before it is removed
    snapshot = run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None
    written = [run_dir / f"{hydra_cfg.job.name}.log"]
    if snapshot is not None:
        written += [snapshot / f"{name}.yaml" for name in ("config", "hydra", "overrides")]
    for path in written:
        path.unlink(missing_ok=True)
    for folder in (snapshot, run_dir):
        if folder is not None:
            try:
                folder.rmdir()
            except OSError:  # not empty: something else lives there
                return


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python train.py [group=option] [key=value] ...`` (Hydra syntax)."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = sys.argv[1:]
    # Hydra's own flags (--cfg, --help, -m, ...) go straight to Hydra; plain overrides are checked
    # first so that a typo gives one line instead of Hydra's multi-line report.
    try:
        import hydra

        if not any(a.startswith("-") for a in args) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            problem = preflight(args)
            if problem:
                print(f"error: {problem}", file=sys.stderr, flush=True)
                sys.exit(1)
        entry = hydra.main(
            config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3"
        )(_hydra_entry)
        entry()
    except KeyboardInterrupt:
        # fit() takes over its own interrupts (it saves last.ckpt and exits 130); one that
        # arrives while the results are written is held until they are complete.
        when = (
            "after training; its files were written first"
            if _RUN_STATE["fit_started"]
            else "before training started"
        )
        print(f"error: interrupted {when}", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
