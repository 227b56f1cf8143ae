"""A NaN/Inf check of the training loss that never makes the GPU wait: recorded on the device every
step, read on the host every N steps (and at epoch end).

Reading a loss on the host (``bool(torch.isfinite(loss))``) blocks until the GPU has finished that
step, so a check every step empties the queue of launched work every step. Here each step only adds
a few device ops to a small state tensor; its index of the first non-finite step maps back to the
global step and batch the host noted for it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fsnet.errors import FsnetError

# Slots of NonFiniteWatch.state (float64: step counts stay exact far past any training's length).
_FIRST_BAD = 0  # device step count of the first non-finite loss; -1 = none yet
_INPUT_BAD = 1  # 1.0 when that step's input batch held NaN/Inf samples
_BAD_LOSS = 2  # the loss value of that step
_COUNT = 3  # steps recorded so far


class NonFiniteWatch:
    """First non-finite training loss, kept on the device; :meth:`check` names its step and batch.

    Per step, call :meth:`record` (device ops only, so it may sit inside a CUDA graph) and
    :meth:`note` (host: which global step, epoch and batch that record was), in the same order.
    """

    def __init__(self) -> None:
        self.state: torch.Tensor | None = None
        self._notes: list[tuple[int, int, int]] = []  # (global step, epoch, batch) since last check
        self._first_count = 0  # device count of self._notes[0]

    def state_on(self, device: torch.device) -> torch.Tensor:
        """The state tensor on ``device``, created (or moved) there on first use."""
        if self.state is None:
            self.state = torch.tensor([-1.0, 0.0, 0.0, 0.0], dtype=torch.float64, device=device)
        elif self.state.device != device:
            self.state = self.state.to(device)
        return self.state

    def record(self, loss: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor) -> None:
        """Device-side: remember this step if its ``loss`` is the first non-finite one."""
        state = self.state_on(loss.device)
        loss = loss.detach().to(state.dtype)
        input_bad = ~(torch.isfinite(noisy).all() & torch.isfinite(clean).all())
        first = ~torch.isfinite(loss) & (state[_FIRST_BAD] < 0)
        count = state[_COUNT]
        update = torch.stack((count, input_bad.to(state.dtype), loss, count + 1))
        keep = torch.stack((state[_FIRST_BAD], state[_INPUT_BAD], state[_BAD_LOSS], count + 1))
        state.copy_(torch.where(first, update, keep))

    def note(self, global_step: int, epoch: int, batch_idx: int) -> None:
        """Host-side: the step that the latest :meth:`record` was."""
        self._notes.append((global_step, epoch, batch_idx))

    @property
    def unchecked(self) -> int:
        """Steps noted since the last :meth:`check`."""
        return len(self._notes)

    def check(
        self, parameters: Iterable[torch.Tensor], latest: torch.Tensor | None = None
    ) -> float | None:
        """Raise FsnetError naming the step, epoch and batch of the first non-finite loss, if any;
        this waits for the device. Returns ``latest`` (a scalar tensor, e.g. the last loss) as a
        float read in the same transfer, or None."""
        if self.state is None:
            self._notes.clear()
            return None
        values = self.state if latest is None else torch.cat((self.state, latest.reshape(1)))
        host = values.detach().double().tolist()  # the one wait for the device
        first = int(host[_FIRST_BAD])
        if first < 0:
            self._first_count = int(host[_COUNT])
            self._notes.clear()
            return None if latest is None else host[-1]
        index = first - self._first_count
        step, epoch, batch = self._notes[index] if 0 <= index < len(self._notes) else (-1, -1, -1)
        if host[_INPUT_BAD]:
            cause = "the input batch contains NaN/Inf samples (check the data)"
        else:
            bad = sum(not bool(torch.isfinite(p).all()) for p in parameters)
            cause = (
                f"the inputs are finite and {bad} weight tensor(s) are now non-finite: training "
                "diverged (try a lower optimizer.lr or trainer.precision=32-true)"
            )
        raise FsnetError(
            f"training loss is {host[_BAD_LOSS]} at global step {step} "
            f"(epoch {epoch}, batch {batch}); {cause}"
        )
