"""One training: :func:`build` (checks, data, network, trainer), :func:`fit`, :func:`finish`
(summary and release file); :func:`train` is the three in a row."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsnet.config import ModelConfig, as_config
from fsnet.errors import FsnetError
from fsnet.interrupts import interrupts_held
from fsnet.train.checks import _check_scalars, resume_checkpoint

log = logging.getLogger("fsnet.train")


def _to_plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


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


@dataclass
class Run:
    """One training run, built and ready to fit: what :func:`build` made and :func:`fit` and
    :func:`finish` use."""

    cfg: Any
    output_dir: Path
    model_config: ModelConfig
    datamodule: Any
    system: Any
    trainer: Any
    ckpt_path: Path | None  # the checkpoint this run resumes from
    parameters: int  # trainable and frozen weights of the network


def _lightning() -> Any:
    """The Lightning package; imported with Ctrl-C held (it loads more of torch's C++ side, see
    fsnet.interrupts)."""
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.11 deprecates, twice per run;
    # nothing for the user to act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    with interrupts_held():
        try:
            import pytorch_lightning as pl
            import pytorch_lightning.callbacks  # noqa: F401
        except ImportError:  # pragma: no cover
            import lightning.pytorch as pl  # type: ignore[no-redef]
            import lightning.pytorch.callbacks  # noqa: F401
    return pl


def _build_datamodule(cfg: Any, model_config: ModelConfig) -> Any:
    datamodule = _instantiate(cfg.data)
    if datamodule.mixing.sample_rate != model_config.sample_rate:
        # the release file would be labelled with the model's rate but trained on the data's
        raise FsnetError(
            f"data.mixing.sample_rate ({datamodule.mixing.sample_rate}) and model.sample_rate "
            f"({model_config.sample_rate}) differ; set both"
        )
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.scan()  # stops here with one line if the corpus is missing or malformed
    return datamodule


def _build_callbacks(cfg: Any, system: Any, loggers: list[Any]) -> list[Any]:
    """The callbacks group, less those that cannot work in this run; a checkpoint callback that
    monitors a metric nobody logs is refused."""
    callbacks = _lightning().callbacks
    found = _instantiate_group(cfg.get("callbacks"))
    if not loggers:
        found = [c for c in found if not isinstance(c, callbacks.LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):
        found = [c for c in found if not isinstance(c, callbacks.ProgressBar)]
    # Lightning also ranks checkpoints by its own "epoch" and "step" counters
    logged = {"val/loss", "val/num_utterances", "epoch", "step"} | {
        f"val/{m}" for m in system.metric_names
    }
    for c in found:
        if isinstance(c, callbacks.ModelCheckpoint) and c.monitor and c.monitor not in logged:
            raise FsnetError(
                f"a checkpoint callback monitors {c.monitor}, which is not logged (logged: {sorted(logged)}); "
                "add it to system.metrics or set callbacks.model_checkpoint.monitor=val/loss "
                "callbacks.model_checkpoint.mode=min"
            )
    if cfg.trainer.get("fast_dev_run"):
        # a smoke run writes no checkpoints; Lightning's train-end save_last would still write
        # last.ckpt, over the real one when the smoke run shares a run folder
        for c in found:
            if isinstance(c, callbacks.ModelCheckpoint):
                c.save_last = False
    return found


def _warm_start(system: Any, init_from: Any, model_config: ModelConfig) -> None:
    """Weights only (fine-tuning, or continuing on a new machine from a release file); the
    optimiser, step count and schedule start afresh. Non-finite weights are refused here, by name,
    rather than surfacing later as a diverged training."""
    from fsnet.checkpoint import load_model

    try:
        source = load_model(str(init_from))
    except FsnetError as exc:
        raise FsnetError(f"init_from={init_from}: {exc}") from None
    if source.config != model_config:
        raise FsnetError(f"init_from={init_from} holds a different network than the model config")
    state = source.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            bad = int((~tensor.isfinite()).sum())
            raise FsnetError(
                f"init_from={init_from}: weight {name} holds {bad} non-finite value(s) (NaN/Inf);"
                " it cannot start a training"
            )
    system.model.load_state_dict(state)
    log.info("initialised weights from %s", init_from)


# Output of a reopened sub-band model: far enough above 0 that the first updates cannot close the
# ReLU again, small beside the decoder's other 64 inputs (its random weights sum it to ~0.05 rms).
REOPENED_SUBBAND_OUTPUT = 0.25


def reopen_subband_output(model: Any, bias: float = REOPENED_SUBBAND_OUTPUT) -> None:
    """Set the sub-band model's output projection to a constant ``bias`` > 0 (weights zero).

    That output passes a ReLU; once every pre-activation is negative (a dead unit) no gradient
    reaches the sub-band model again and the decoder's sub-band inputs stay at their random
    initialisation. A positive constant opens the ReLU with gradients flowing, and changes the
    network's output only through those untrained decoder weights (a sum of random signs)."""
    import torch

    proj = model.bottleneck.proj
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.fill_(bias)
    log.info("sub-band output reopened: weights 0, bias %g", bias)


def training_precision(trainer_cfg: Any) -> Any:
    """``trainer.precision`` with ``auto`` resolved: bf16-mixed where the run will be on a CUDA GPU
    with native bfloat16 (no loss scaling needed, about twice fp32's speed), else 32-true (bf16
    autocast on a CPU is slow)."""
    precision = trainer_cfg.get("precision")
    if str(precision) != "auto":
        return precision
    import torch

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-mixed"
    return "32-true"


def _check_step_graph(trainer_cfg: Any) -> None:
    if trainer_cfg.get("accumulate_grad_batches", 1) != 1:
        raise FsnetError(
            "system.cuda_graph=step makes one optimiser step per batch; set "
            "trainer.accumulate_grad_batches=1 (or a larger data.batch_size)"
        )


def _system_clipping(trainer_cfg: Any, system_options: dict[str, Any]) -> dict[str, Any]:
    """Move ``trainer.gradient_clip_*`` into the system, which then clips itself, and return the
    trainer arguments that turn Lightning's clipping off. Needed where Lightning will not clip:
    the step graph (manual optimisation) and a fused optimiser under bf16 (Lightning refuses it
    for any mixed precision, although only fp16's loss scale is a reason to)."""
    system_options["gradient_clip_val"] = trainer_cfg.get("gradient_clip_val")
    system_options["gradient_clip_algorithm"] = trainer_cfg.get("gradient_clip_algorithm") or "norm"
    return {"gradient_clip_val": None, "gradient_clip_algorithm": None}


def build(cfg: Any) -> Run:
    """Everything before fitting: checks, data, network, trainer, the checkpoint to resume from
    and warm-start weights. A refused run raises FsnetError having written nothing of its own."""
    import torch

    from fsnet.step_graph import graph_mode
    from fsnet.system import EnhancementSystem
    from fsnet.train.checkpoint_io import AtomicCheckpointIO

    pl = _lightning()
    output_dir = Path(cfg.paths.output_dir).resolve()
    model_config = as_config(cfg.model)  # the one conversion: the system builds from this object
    _check_scalars(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 parts on Ampere+

    datamodule = _build_datamodule(cfg, model_config)
    optimizer = _instantiate(cfg.optimizer)
    system_options = _to_plain(cfg.get("system")) or {}
    trainer_options = {"precision": training_precision(cfg.trainer)}
    mode = graph_mode(system_options.get("cuda_graph", False))
    if mode == "network":
        # The loader's pin-memory thread calls into CUDA while make_graphed_callables captures,
        # which invalidates the capture; without pinning, batches copy from pageable memory.
        # (The step graph captures in thread-local mode, which lets other threads call CUDA.)
        datamodule.pin_memory = False
    elif mode == "step":
        _check_step_graph(cfg.trainer)
    fused = bool((cfg.get("optimizer") or {}).get("fused"))
    if mode == "step" or (fused and not str(trainer_options["precision"]).startswith("16")):
        trainer_options.update(_system_clipping(cfg.trainer, system_options))
    lr_scheduler = _instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None
    system = EnhancementSystem(
        model_config, optimizer=optimizer, lr_scheduler=lr_scheduler, **system_options
    )
    loggers = _instantiate_group(cfg.get("logger"))
    trainer = _instantiate(
        cfg.trainer,
        callbacks=_build_callbacks(cfg, system, loggers),
        logger=loggers if loggers else False,
        plugins=[AtomicCheckpointIO()],
        **trainer_options,
    )
    ckpt_path = resume_checkpoint(cfg.get("resume"), output_dir)
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
        # expected when resuming: the checkpoint folder of this run holds the earlier checkpoints
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    if cfg.get("init_from") and ckpt_path is None:
        _warm_start(system, cfg.get("init_from"), model_config)
        if cfg.get("init_reopen_subband"):
            reopen_subband_output(system.model)
    parameters = sum(p.numel() for p in system.model.parameters())
    log.info("precision %s, cuda_graph %s", trainer_options["precision"], mode)
    log.info(
        "model: %d parameters, %s; output folder: %s",
        parameters,
        model_config.to_dict(),
        output_dir,
    )
    return Run(cfg, output_dir, model_config, datamodule, system, trainer, ckpt_path, parameters)


def fit(run: Run) -> str | None:
    """``Trainer.fit``; returns the name of the signal that stopped it ("SIGINT", "SIGTERM"), or
    None when it ran to its end. Lightning saves ``last.ckpt`` of a stopped run itself."""
    ckpt_path = run.ckpt_path
    try:
        run.trainer.fit(
            run.system, datamodule=run.datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None
        )
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
        # status 0; the run's summary and release file are still written (finish()).
        if not run.trainer.interrupted:
            raise
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        return "SIGTERM" if isinstance(exc, SIGTERMException) else "SIGINT"
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
    return None


def _summary(run: Run, stop_signal: str | None) -> dict[str, Any]:
    """What the run reached, from its checkpoint callbacks: the ranked one ("best") and the
    unranked one ("last")."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    trainer = run.trainer
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
    return {
        "output_dir": str(run.output_dir),
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.current_epoch),
        "interrupted": bool(trainer.interrupted),
        "stopped_by": stop_signal,
        "resumed_from": str(run.ckpt_path) if run.ckpt_path else None,
        "best_model_path": best_path or None,
        "monitor": monitor,  # what "best" means: the ranked checkpoint's metric
        "best_score": score,
        "best_pesq_wb": score if monitor == "val/pesq_wb" else None,
        "last_model_path": last_path or None,
        "release_path": None,
        "parameters": run.parameters,
    }


def _write_release(run: Run, summary: dict[str, Any]) -> None:
    """``release.pt`` from the best checkpoint, or from the final weights when there is none."""
    from fsnet.checkpoint import load_model, save_release

    best_path = summary["best_model_path"]
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
        model = run.system.model.float().cpu().eval()
        source = "final weights"
    release = save_release(model, run.output_dir / "release.pt")
    summary["release_path"] = str(release)
    log.info("release file %s written from %s", release, source)


def finish(run: Run, stop_signal: str | None = None) -> dict[str, Any]:
    """Rank 0 writes ``train_summary.json`` and, if ``export_release``, ``release.pt``; returns
    the summary (on every rank). ``stop_signal``: what :func:`fit` returned."""
    summary = _summary(run, stop_signal)
    trainer = run.trainer
    # An interrupt while the results are written would leave a run with checkpoints but no release
    # file or summary; it waits until they are complete (then main() reports it).
    nothing_trained = stop_signal is not None and trainer.global_step == 0
    with interrupts_held():
        if trainer.is_global_zero:
            if nothing_trained:
                log.info("interrupted before the first training step: no release.pt written")
            elif run.cfg.get("export_release", True) and not trainer.fast_dev_run:
                _write_release(run, summary)  # a smoke run exports nothing
            (run.output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            log.info(
                "done: step %d, epoch %d, best %s %s (%s)",
                summary["global_step"],
                summary["epoch"],
                summary["monitor"],
                summary["best_score"],
                summary["best_model_path"] or "no checkpoint",
            )
    if stop_signal is None:
        return summary
    if nothing_trained and run.ckpt_path is not None:  # stopped before the checkpoint was restored
        log.info(
            "stopped by %s before training resumed; the same command resumes from %s",
            stop_signal,
            run.ckpt_path,
        )
    elif nothing_trained:
        log.info("stopped by %s before the first training step; nothing to resume", stop_signal)
    else:
        log.info("stopped by %s; resume=true continues from last.ckpt", stop_signal)
    return summary


def train(cfg: Any) -> dict[str, Any]:
    """Train from a composed config (``configs/train.yaml``); returns the summary (also on non-zero
    ranks). A run stopped by Ctrl-C or SIGTERM returns too, with ``summary["stopped_by"]`` set.

    Rank 0 also writes ``<output_dir>/train_summary.json`` and, if ``export_release``, the release
    file ``<output_dir>/release.pt`` made from the best checkpoint (or the final weights).
    """
    run = build(cfg)
    return finish(run, fit(run))
