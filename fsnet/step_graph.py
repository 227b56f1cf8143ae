"""CUDA graphs of the training step, for ``system.cuda_graph``.

- ``network``: :func:`graph_network`, the network's forward and backward only
  (``torch.cuda.make_graphed_callables``); the rest of the step stays eager.
- ``step``: :class:`StepGraph`, the whole step as one graph: STFTs, target, network, loss, backward,
  gradient clipping, the optimiser's update and the NaN/Inf record. Each step then costs a copy of
  the batch into static buffers and one replay, instead of thousands of kernel launches.

A graph replays fixed device addresses: the batch is copied into buffers made at capture, the
gradients and the optimiser's state stay where the capture found them, and the learning rate is a
device tensor that the scheduler updates in place. None of this changes what is saved:
:func:`plain_optimizer_state` writes checkpoints as an eager run would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fsnet.errors import FsnetError
from fsnet.nonfinite import NonFiniteWatch

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuDNN autotuning, lazy state)


def graph_mode(value: Any) -> bool | str:
    """``system.cuda_graph`` as False, "network" or "step" (true means "network", as it did
    before the whole step could be captured)."""
    if value is False or value is True:
        return "network" if value else False
    if value in ("network", "step"):
        return value
    raise FsnetError(f"system.cuda_graph must be true or false, or network or step, got {value!r}")


class _Forward(torch.nn.Module):
    """``model(mag)`` as a module of its own, for ``torch.cuda.make_graphed_callables``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        return self.model(mag)


def _autocast_dtype(device_type: str = "cuda") -> torch.dtype | None:
    """The dtype of the surrounding autocast (the trainer's precision), or None."""
    enabled = torch.is_autocast_enabled(device_type)
    return torch.get_autocast_dtype(device_type) if enabled else None


def graph_network(model: torch.nn.Module, mag: torch.Tensor) -> torch.nn.Module:
    """``model``'s training forward and backward as CUDA graphs, for inputs shaped like ``mag``."""
    # A wrapper is graphed, not the model: make_graphed_callables replaces the forward of what it
    # is given, and the model itself must stay eager for validation and export.
    wrapper = _Forward(model).train()
    dtype = _autocast_dtype()
    # Graph capture needs autocast's weight-cast cache off, and emptied: casts cached by earlier
    # eager steps inside Lightning's autocast invalidate the capture otherwise. The captured
    # kernels keep the precision they were recorded with.
    torch.clear_autocast_cache()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None, cache_enabled=False):
        graphed = torch.cuda.make_graphed_callables(wrapper, (mag.detach().clone(),))
    log.info("captured the network's training step as CUDA graphs for input %s", tuple(mag.shape))
    return graphed


def clip_gradients(parameters: Sequence[torch.Tensor], value: float | None, algorithm: str) -> None:
    """Lightning's ``gradient_clip_val`` / ``gradient_clip_algorithm``, without host syncs."""
    if not value:
        return
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(parameters, value, foreach=True)
    elif algorithm == "value":
        torch.nn.utils.clip_grad_value_(parameters, value, foreach=True)
    else:
        raise FsnetError(f"gradient_clip_algorithm must be norm or value, got {algorithm!r}")


def plain_optimizer_state(checkpoint: dict[str, Any]) -> None:
    """Learning rates in a Lightning checkpoint as floats, as an eager run saves them.

    The step graph keeps each ``lr`` as a device tensor (so the scheduler can change it between
    replays) and the optimiser ``capturable``; a checkpoint must resume in any mode.
    """
    for state in checkpoint.get("optimizer_states", []):
        for group in state.get("param_groups", []):
            if isinstance(group.get("lr"), torch.Tensor):
                group["lr"] = float(group["lr"])
            group["capturable"] = False
    for state in checkpoint.get("lr_schedulers", []):
        last = state.get("_last_lr")
        if isinstance(last, list):
            state["_last_lr"] = [float(v) if isinstance(v, torch.Tensor) else v for v in last]


class StepGraph:
    """One training step (loss, backward, clipping, optimiser update) replayed as a CUDA graph.

    Args:
        loss_fn: ``(noisy, clean) -> (loss, extras)``: the scalar training loss and a dict of
            scalar tensors to log; runs under the trainer's autocast.
        parameters: what the optimiser updates.
        optimizer: the torch optimiser (capturable: set here), with its state in place.
        watch: the NaN/Inf record, updated inside the graph.
        clip_val, clip_algorithm: gradient clipping (None = none).
        precision: the trainer's (32-true or bf16-mixed: 16-mixed's loss scaling reads the
            gradients on the host every step, which a graph cannot).
        capture: False = never capture: the same step, eager (the CPU tests of this path).
    """

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, Any]]],
        parameters: Sequence[torch.Tensor],
        optimizer: torch.optim.Optimizer,
        watch: NonFiniteWatch,
        clip_val: float | None,
        clip_algorithm: str,
        precision: str = "32-true",
        capture: bool = True,
    ):
        if precision not in ("32-true", "32", "bf16-mixed"):
            raise FsnetError(
                f"system.cuda_graph=step needs trainer.precision=bf16-mixed or 32-true, got {precision}"
            )
        self.loss_fn = loss_fn
        self.capture = capture
        self.parameters = list(parameters)
        self.optimizer = optimizer
        self.watch = watch
        self.clip_val = clip_val
        self.clip_algorithm = clip_algorithm
        # the trainer's autocast, which surrounds training_step (so this constructor)
        self.dtype = {kind: _autocast_dtype(kind) for kind in ("cuda", "cpu")}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shape: tuple[int, ...] | None = None
        self.noisy: torch.Tensor | None = None
        self.clean: torch.Tensor | None = None
        self.outputs: tuple[torch.Tensor, dict[str, Any]] | None = None

    def _step(self, noisy: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The step itself, eager or under capture. Only the loss runs under autocast (with its
        weight-cast cache off, which capture needs); clipping and the update run in float32."""
        kind, dtype = noisy.device.type, self.dtype.get(noisy.device.type)
        with torch.autocast(kind, enabled=False):
            with torch.autocast(kind, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
                loss, extras = self.loss_fn(noisy, clean)
            loss.backward()
            clip_gradients(self.parameters, self.clip_val, self.clip_algorithm)
            self.optimizer.step()
            self.watch.record(loss, noisy, clean)
        return loss.detach(), {k: v.detach() for k, v in extras.items()}

    def __call__(self, noisy: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """One optimiser step on this batch: replayed if it has the captured shape (captured on
        the first call), else eager (also every step with ``capture=False``, which runs the same
        step on any device, for tests). Returns the loss and extras (device tensors; a replay's
        are the graph's outputs, overwritten by the next replay)."""
        if self.graph is None and self.capture:
            self._capture(noisy, clean)
        if self.graph is None or tuple(noisy.shape) != self.shape or clean.shape != noisy.shape:
            # another shape (a short last batch): eager, into the same gradient tensors
            self.optimizer.zero_grad(set_to_none=False)
            return self._step(noisy, clean)
        self.noisy.copy_(noisy, non_blocking=True)
        self.clean.copy_(clean, non_blocking=True)
        self.graph.replay()
        return self.outputs

    # ---------------------------------------------------------------- capture
    def _prepare_optimizer(self, device: torch.device) -> None:
        """Capturable optimiser: device learning rates (the scheduler fills them in place) and
        device step counters (a graph cannot read host numbers that change)."""
        # torch warns once when a capturable optimiser steps uncaptured: the warm-up and other
        # batch shapes do, on purpose
        self.optimizer._warned_capturable_if_run_uncaptured = True
        for group in self.optimizer.param_groups:
            group["capturable"] = True
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
            for p in group["params"]:
                state = self.optimizer.state.get(p, {})
                step = state.get("step")
                if isinstance(step, torch.Tensor) and step.device != p.device:
                    state["step"] = step.to(device=p.device, dtype=torch.float32)

    def _snapshot(self) -> Callable[[], None]:
        """A function that puts the parameters, optimiser state and NaN record back as they are
        now, in place (the graph holds their addresses). Warm-up steps are real updates, and the
        step being captured must start where an eager run would."""
        params = [p.detach().clone() for p in self.parameters]
        states = {p: {k: v.clone() for k, v in s.items()} for p, s in self.optimizer.state.items()}
        watch = self.watch.state.clone() if self.watch.state is not None else None

        def restore() -> None:
            with torch.no_grad():
                for p, saved in zip(self.parameters, params, strict=True):
                    p.copy_(saved)
                for p, state in self.optimizer.state.items():
                    for key, value in state.items():
                        if not isinstance(value, torch.Tensor):
                            continue
                        if p in states:
                            value.copy_(states[p][key])
                        else:  # made by the warm-up: zeros are a fresh state (moments, step 0)
                            value.zero_()
                if watch is not None:
                    self.watch.state.copy_(watch)

        return restore

    def _capture(self, noisy: torch.Tensor, clean: torch.Tensor) -> None:
        self.shape = tuple(noisy.shape)
        self.noisy = noisy.detach().clone()
        self.clean = clean.detach().clone()
        self._prepare_optimizer(noisy.device)
        self.watch.state_on(noisy.device)
        restore = self._snapshot()
        # Warm-up on a side stream, as torch.cuda.graphs asks: cuDNN autotuning, cuFFT plans, the
        # optimiser's lazy state and autograd's stream bookkeeping happen before capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.optimizer.zero_grad(set_to_none=True)
                self._step(self.noisy, self.clean)
        torch.cuda.current_stream().wait_stream(side)
        restore()
        # Gradients are allocated by the captured backward, from the graph's memory pool.
        self.optimizer.zero_grad(set_to_none=True)
        torch.clear_autocast_cache()
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the data loader's pin-memory thread may call CUDA while this one captures.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = self._step(self.noisy, self.clean)
        log.info("captured the whole training step as one CUDA graph for batch %s", self.shape)
