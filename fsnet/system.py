"""The LightningModule that trains Fast FullSubNet: cIRM regression, validation metrics, throughput.

Checkpoints keep the network under the ``model.`` prefix and its plain-data config under
``hyper_parameters["model_config"]``, so ``fsnet.load_model("last.ckpt")`` rebuilds the network
from the file alone (no Hydra config, no Lightning needed to read it back as a model).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fsnet import losses
from fsnet.config import ModelConfig, as_config
from fsnet.errors import FsnetError
from fsnet.frontend import apply_mask, build_cirm
from fsnet.layers import set_training_kernel
from fsnet.metrics import compute_metrics, set_dnsmos_threads
from fsnet.model import build_model
from fsnet.nonfinite import NonFiniteWatch
from fsnet.step_graph import (
    StepGraph,
    clip_gradients,
    graph_mode,
    graph_network,
    plain_optimizer_state,
)

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl  # type: ignore[no-redef]

log = logging.getLogger(__name__)

# Metrics validation can log, as val/<name>: fsnet.metrics' own names, as evaluate.py reports them.
VALIDATION_METRICS = (
    "pesq_wb",  # wide-band PESQ (P.862.2), MOS-LQO
    "pesq_nb",  # narrow-band PESQ (P.862), MOS-LQO
    "stoi",  # STOI, 0..1
    "estoi",  # extended STOI, 0..1
    "si_sdr",  # scale-invariant SDR, dB
    # DNSMOS P.835 of the enhanced signal alone (MOS 1-5, ONNX models of the speechmos wheel);
    # about 0.1 s of CPU per utterance, so off by default.
    "dnsmos_sig",  # speech quality
    "dnsmos_bak",  # background-noise quality
    "dnsmos_ovrl",  # overall quality
)
DEFAULT_METRICS = ("pesq_wb", "pesq_nb", "stoi", "si_sdr")


def score_utterance(
    estimate: np.ndarray, reference: np.ndarray, metrics: Sequence[str]
) -> dict[str, float]:
    """``{val name: value}`` of one enhanced utterance ``estimate [N]`` against ``reference [N]``,
    both at 16 kHz (NaN where a metric is undefined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics come back as NaN and are counted apart
        values = compute_metrics(estimate, reference, metrics=list(metrics))
    return {m: float(values.get(m, math.nan)) for m in metrics}


def _option(name: str, value: Any, kind: type) -> Any:
    """``kind(value)``, or one clear error naming the ``system.`` key (Hydra passes typos as text)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise FsnetError(f"system.{name} must be a number, got {value!r}") from None


def _init_metric_worker() -> None:
    warnings.simplefilter("ignore")  # NaN cases are counted by the caller, not warned
    set_dnsmos_threads(1)  # one core per worker: the pool itself provides the parallelism


def default_optimizer(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam as in the original recipe (lr 1e-3, betas 0.9 / 0.999), fused as in train.yaml."""
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), fused=True)


class EnhancementSystem(pl.LightningModule):
    """Fast FullSubNet + compressed-cIRM MSE loss + validation WB/NB-PESQ, STOI, SI-SDR.

    Args:
        model_config: ``ModelConfig`` fields (mapping, ModelConfig or None = paper defaults).
        optimizer: ``params -> torch.optim.Optimizer`` (e.g. a Hydra ``_partial_`` of Adam).
        metric_workers: processes scoring validation utterances in the background (0 = inline).
        metrics: validation metrics to log as ``val/<name>`` (names in ``VALIDATION_METRICS``).
        lr_scheduler: ``optimizer -> scheduler``, stepped every optimiser step (None = constant).
        cuda_graph: replay training steps as CUDA graphs (one GPU, fixed batch shape; other
            shapes and validation run eagerly): false, true or "network" (the network's forward
            and backward), "step" (the whole step, update included: manual optimisation, see
            fsnet.step_graph). Small-batch recurrent steps are bound by kernel-launch cost.
        check_every_n_steps: training steps between host reads of the device-side NaN/Inf record
            of the loss (also read at epoch end and before validation).
        lstm_kernel: the recurrent layers' training kernels (fsnet.layers.set_training_kernel).
        gradient_clip_val, gradient_clip_algorithm: clipping done by the system, where Lightning
            does not clip (the step graph; a fused optimiser under bf16): train.py moves
            ``trainer.gradient_clip_*`` here.
        spectral_loss_weight: weight of a second training loss term on the *enhanced* spectrum
            (0 = the paper's cIRM loss alone): the compressed-spectrum loss of Braun & Tashev
            (2021), ``share * |S^p - Ŝ^p|^2 + (1 - share) * (|S|^p - |Ŝ|^p)^2`` with magnitudes
            raised to ``spectral_loss_power`` and phases kept. The cIRM loss weighs every bin
            alike, silent ones included; this one weighs them by how loud they are, as PESQ does.
        spectral_loss_power: magnitude compression exponent ``p`` of that term.
        spectral_loss_complex_share: ``share`` of its complex part (the rest is magnitude only).
        residual_loss_weight: weight of a third term, ``fsnet.losses.residual_loss``: the
            compressed magnitude left above the clean speech's (residual noise), at the same power.
    """

    def __init__(
        self,
        model_config: Mapping[str, Any] | ModelConfig | None = None,
        optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
        metric_workers: int = 8,
        metrics: Sequence[str] = DEFAULT_METRICS,
        lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        cuda_graph: bool | str = False,
        check_every_n_steps: int = 50,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        lstm_kernel: str = "cudnn",
        spectral_loss_weight: float = 0.0,
        spectral_loss_power: float = 0.3,
        spectral_loss_complex_share: float = 0.3,
        residual_loss_weight: float = 0.0,
    ):
        super().__init__()
        cfg = as_config(model_config)
        metric_workers = _option("metric_workers", metric_workers, int)
        if metric_workers < 0:
            raise FsnetError(
                f"system.metric_workers must be >= 0 (0 = inline), got {metric_workers}"
            )
        self.cuda_graph = graph_mode(cuda_graph)
        self.automatic_optimization = self.cuda_graph != "step"  # the graph makes the update
        self.check_every_n_steps = _option("check_every_n_steps", check_every_n_steps, int)
        if self.check_every_n_steps < 1:
            raise FsnetError(f"system.check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        metrics = [str(m) for m in metrics]
        unknown = [m for m in metrics if m not in VALIDATION_METRICS]
        if unknown:
            raise FsnetError(
                f"unknown validation metric(s) {unknown}; choose from {list(VALIDATION_METRICS)}"
            )
        # Plain data only: the checkpoint must be readable without this class.
        self.save_hyperparameters(
            {
                "model_config": cfg.to_dict(),
                "metric_workers": metric_workers,
                "metrics": metrics,
            }
        )
        self.model = build_model(cfg)
        try:
            set_training_kernel(self.model, lstm_kernel)
        except ValueError as exc:
            raise FsnetError(f"system.lstm_kernel: {exc}") from None
        self.optimizer_factory = optimizer or default_optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.metric_names = tuple(metrics)
        self.metric_workers = metric_workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pending: list[tuple[Any, np.ndarray, np.ndarray]] = []
        self._val_loss = [0.0, 0]  # sum of squared errors, number of elements
        self._batch_ends: list[float] = []  # host clock at the latest training batches' ends
        self._watch = NonFiniteWatch()
        self._set_loss_options(
            spectral_loss_weight,
            spectral_loss_power,
            spectral_loss_complex_share,
            residual_loss_weight,
        )
        # Kept out of the module tree so checkpoints keep their layout: (input shape, graphed
        # network) for cuda_graph=network, the StepGraph for cuda_graph=step.
        self.__dict__["_graphed"] = None
        self.__dict__["_step_graph"] = None

    def _set_loss_options(self, spectral_weight, power, complex_share, residual_weight) -> None:
        """The weights and shape of the loss terms on the enhanced spectrum, checked."""
        self.spectral_loss_weight = _option("spectral_loss_weight", spectral_weight, float)
        self.spectral_loss_power = _option("spectral_loss_power", power, float)
        share = _option("spectral_loss_complex_share", complex_share, float)
        self.spectral_loss_complex_share = share
        self.residual_loss_weight = _option("residual_loss_weight", residual_weight, float)
        if self.residual_loss_weight < 0:
            raise FsnetError("system.residual_loss_weight must be >= 0")
        if self.spectral_loss_weight < 0 or not 0.0 <= share <= 1.0:
            raise FsnetError(
                "system.spectral_loss_weight must be >= 0 and spectral_loss_complex_share in [0, 1]"
            )
        if not 0.0 < self.spectral_loss_power <= 1.0:
            raise FsnetError("system.spectral_loss_power must be in (0, 1]")

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    # ---------------------------------------------------------------- shared step
    def loss_terms(
        self, noisy: torch.Tensor, clean: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int | torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(squared-error sum, element count, predicted mask, noisy spectrum, clean spectrum)``.

        ``noisy``, ``clean``: ``[B, N]`` at the model rate (16 kHz); ``lengths``: ``[B]`` valid
        samples per row (None = all). Spectra are complex ``[B, F, T]``, the mask ``[B, 2, F, T]``.

        Target: compressed cIRM of (noisy, clean) spectra; frames past ``lengths`` are left out.
        The STFT, target and loss stay float32 under autocast; only the network runs in bf16.
        """
        stft = self.model.stft
        noisy_spec = stft.stft(noisy.float())
        clean_spec = stft.stft(clean.float())
        target = build_cirm(noisy_spec, clean_spec)
        pred = self._network(noisy_spec.abs()[:, None])
        err = (pred.float() - target).square()
        if lengths is None:
            return err.sum(), err.numel(), pred, noisy_spec, clean_spec
        frames = torch.tensor([stft.num_frames(int(n)) for n in lengths], device=err.device)
        valid = torch.arange(err.shape[-1], device=err.device)[None, :] < frames[:, None]  # [B, T]
        err = err * valid[:, None, None, :]
        count = valid.sum() * err.shape[1] * err.shape[2]
        return err.sum(), count, pred, noisy_spec, clean_spec

    def _network(self, mag: torch.Tensor) -> torch.Tensor:
        """``self.model(mag)``, replayed from CUDA graphs for training batches when
        ``cuda_graph=network``."""
        if not (self.cuda_graph == "network" and self.training and torch.is_grad_enabled()):
            return self.model(mag)
        self._check_one_gpu(mag)
        graphed = self.__dict__["_graphed"]
        if graphed is None:
            graphed = (tuple(mag.shape), graph_network(self.model, mag))
            self.__dict__["_graphed"] = graphed
        shape, module = graphed
        return module(mag) if tuple(mag.shape) == shape else self.model(mag)

    def _check_one_gpu(self, x: torch.Tensor) -> None:
        name = "true" if self.cuda_graph == "network" else self.cuda_graph
        if x.device.type != "cuda":
            raise FsnetError(f"system.cuda_graph={name} needs a CUDA device (trainer=gpu)")
        if self.trainer.world_size > 1:
            raise FsnetError(
                f"system.cuda_graph={name} is for one GPU; DDP's gradient hooks cannot be captured"
            )

    # ---------------------------------------------------------------- training
    def training_loss(
        self, noisy: torch.Tensor, clean: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of ``noisy, clean [B, N]`` and its terms to log, by name."""
        err_sum, count, pred, noisy_spec, clean_spec = self.loss_terms(noisy, clean)
        loss = err_sum / count
        if self.spectral_loss_weight <= 0 and self.residual_loss_weight <= 0:
            return loss, {}
        spectral, residual = losses.spectrum_losses(
            apply_mask(noisy_spec, pred),
            clean_spec,
            self.spectral_loss_power,
            self.spectral_loss_complex_share,
        )
        terms, total = {"train/cirm_loss": loss}, loss
        for name, term, weight in (
            ("spectral", spectral, self.spectral_loss_weight),
            ("residual", residual, self.residual_loss_weight),
        ):
            if weight > 0:
                terms[f"train/{name}_loss"] = term
                total = total + weight * term
        return total, terms

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        noisy, clean = batch[0], batch[1]
        # Noted before the step: a graphed step advances global_step itself.
        self._watch.note(self.global_step, self.current_epoch, batch_idx)
        if self.cuda_graph == "step":
            loss, terms = self._graphed_step(noisy, clean)
        else:
            loss, terms = self.training_loss(noisy, clean)
            self._watch.record(loss, noisy, clean)
        # Device tensors, on_step, no prog_bar: Lightning reads them on the host only every
        # trainer.log_every_n_steps (a prog_bar value is read every step, which waits for the GPU).
        for name, value in {**terms, "train/loss": loss}.items():
            self.log(name, value.detach(), on_step=True, batch_size=noisy.shape[0])
        if self._watch.unchecked >= self.check_every_n_steps:
            shown = self._watch.check(self.model.parameters(), latest=loss)
            # The progress bar's loss, refreshed when it was read anyway (a CPU tensor: no wait).
            self.log("loss", torch.tensor(shown), prog_bar=True, logger=False, on_step=True)
        return loss

    def _graphed_step(
        self, noisy: torch.Tensor, clean: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``cuda_graph=step`` (manual optimisation): the whole step as one replayed graph."""
        optimizer = self.optimizers()
        graph = self.__dict__["_step_graph"]
        if graph is None:
            self._check_one_gpu(noisy)
            graph = StepGraph(
                self.training_loss,
                [p for group in optimizer.param_groups for p in group["params"]],
                optimizer.optimizer,
                self._watch,
                self.gradient_clip_val,
                self.gradient_clip_algorithm,
                precision=str(self.trainer.precision),
                capture=noisy.device.type == "cuda",
            )
            self.__dict__["_step_graph"] = graph
        # Lightning counts optimiser steps (global_step, max_steps, checkpoint names) in these
        # hooks of LightningOptimizer.step, which the replayed graph does not go through.
        optimizer._on_before_step()
        loss, terms = graph(noisy, clean)
        optimizer._on_after_step()
        scheduler = self.lr_schedulers()  # manual optimisation: stepped here, every step
        if scheduler is not None:
            scheduler.step()
        # copies: the graph's outputs are overwritten by the next replay
        return loss.clone(), {k: v.clone() for k, v in terms.items()}

    def on_train_epoch_end(self) -> None:
        self._watch.check(self.model.parameters())  # FsnetError if a loss since the last was NaN

    on_train_end = on_train_epoch_end

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._watch.check(self.model.parameters())  # never a checkpoint of a diverged state
        plain_optimizer_state(checkpoint)  # resumable in every cuda_graph mode

    def on_train_epoch_start(self) -> None:
        # New mixtures each epoch: the dataset seeds example i of epoch e from (seed, e, i).
        loader = getattr(self.trainer, "train_dataloader", None)
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)
        self._batch_ends.clear()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Host clock over the last log_every_n_steps batches, without waiting for the GPU: the
        # logger's read every log_every_n_steps makes the host wait for the GPU once per window,
        # so the window's rate is the GPU's, not the rate at which the host queues work.
        times = self._batch_ends
        times.append(time.perf_counter())
        del times[: -(max(int(self.trainer.log_every_n_steps), 1) + 1)]
        if len(times) < 2:
            return
        noisy = batch[0]
        seconds = noisy.shape[0] * noisy.shape[-1] / self.config.sample_rate * (len(times) - 1)
        rate = seconds * self.trainer.world_size / max(times[-1] - times[0], 1e-9)
        # A CPU tensor: a Python number would be copied to the GPU, which waits for the GPU.
        self.log(
            "train/audio_seconds_per_second",
            torch.tensor(rate),
            on_step=True,
            batch_size=noisy.shape[0],
        )

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val=None, **kwargs) -> None:
        if self.gradient_clip_val is None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, **kwargs)
        clip_gradients(self.parameters(), self.gradient_clip_val, self.gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        # Stepped every optimiser step, so a schedule's length is counted in steps, not epochs
        # (by Lightning, or by _graphed_step under manual optimisation, where Lightning ignores it).
        scheduler = {"scheduler": self.lr_scheduler_factory(optimizer)}
        if self.automatic_optimization:
            scheduler["interval"] = "step"
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ---------------------------------------------------------------- validation
    def _metric_pool(self) -> concurrent.futures.ProcessPoolExecutor | None:
        if self.metric_workers <= 0:
            return None
        if self._pool is None:
            # spawn: never fork a process that may hold CUDA state or loader threads. The workers run
            # fsnet.metrics.compute_metrics only (no Lightning import).
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.metric_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_metric_worker,
            )
        return self._pool

    def on_validation_epoch_start(self) -> None:
        self._watch.check(
            self.model.parameters()
        )  # before validation can lead to a checkpoint of NaN weights
        self._pending = []
        self._val_loss = [0.0, 0]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        noisy, clean, lengths = batch["noisy"], batch["clean"], batch["lengths"]
        err_sum, count, pred, noisy_spec, _ = self.loss_terms(noisy, clean, lengths)
        self._val_loss[0] += float(err_sum.detach())
        self._val_loss[1] += int(count)
        if not self.metric_names:
            return
        enhanced = (
            self.model.stft.istft(apply_mask(noisy_spec, pred), noisy.shape[-1])
            .float()
            .cpu()
            .numpy()
        )
        reference = clean.float().cpu().numpy()
        pool = self._metric_pool()
        names = list(self.metric_names)
        for i, n in enumerate(lengths.tolist()):
            est, ref = enhanced[i, :n].copy(), reference[i, :n].copy()
            future = pool.submit(compute_metrics, est, ref, names) if pool is not None else None
            self._pending.append((future, est, ref))

    def _gather_scores(self) -> list[dict[str, float]]:
        scores = []
        for future, est, ref in self._pending:
            if future is None:
                scores.append(score_utterance(est, ref, self.metric_names))
                continue
            try:
                values = future.result()
                scores.append({m: float(values.get(m, math.nan)) for m in self.metric_names})
            except Exception as exc:  # noqa: BLE001 - a dead worker must not lose the epoch
                log.warning("metric worker failed (%s); scoring in the training process", exc)
                self._shutdown_pool()
                scores.append(score_utterance(est, ref, self.metric_names))
        self._pending = []
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self._gather_scores()
        # Per-rank sums and counts, summed over ranks, then divided: every utterance counts once.
        values = [self._val_loss[0], float(self._val_loss[1]), float(len(scores))]
        for name in self.metric_names:
            finite = [s[name] for s in scores if math.isfinite(s[name])]
            values += [math.fsum(finite), float(len(finite))]
        totals = torch.tensor(values, dtype=torch.float64, device=self.device)
        totals = (
            self.trainer.strategy.reduce(totals, reduce_op="sum")
            if self._trainer is not None
            else totals
        )
        totals = totals.tolist()
        val_loss = totals[0] / totals[1] if totals[1] else math.nan
        self.log("val/loss", val_loss, sync_dist=True, prog_bar=True)
        self.log("val/num_utterances", totals[2], sync_dist=True)
        for k, name in enumerate(self.metric_names):
            total, count = totals[3 + 2 * k], totals[4 + 2 * k]
            self.log(
                f"val/{name}",
                total / count if count else math.nan,
                sync_dist=True,
                prog_bar=name == "pesq_wb",
            )
            if count < totals[2]:
                log.info(
                    "val/%s undefined for %d of %d utterances (left out of the mean)",
                    name,
                    int(totals[2] - count),
                    int(totals[2]),
                )
        self._batch_ends.clear()  # validation time is not training throughput

    # ---------------------------------------------------------------- cleanup
    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def teardown(self, stage: str) -> None:
        self._shutdown_pool()
