"""The one exception type that user-facing code turns into a one-line error message."""

from typing import Any

import numpy as np


class FsnetError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); CLIs print it as one line."""


def fsnet_cause(exc: BaseException | None) -> FsnetError | None:
    """The FsnetError in ``exc``'s chain of causes (Hydra and OmegaConf wrap the ones raised in
    instantiated targets and resolvers, OmegaConf even with ``from None``, hence ``__context__``
    regardless), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FsnetError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def check_finite_output(y: Any, what: str) -> None:
    """Raise FsnetError if the enhanced signal ``y`` (numpy array or tensor, any device) holds NaN
    or Inf, naming ``what`` (a file name): written out, NaN becomes full-scale noise in a 16-bit
    file. Cheap enough to call on every block a CLI writes; once per file at the least."""
    if hasattr(y, "isfinite"):  # a torch tensor: counted where it lives
        bad = int((~y.detach().isfinite()).sum())
        size = y.numel()
    else:
        y = np.asarray(y)
        bad = int(y.size - np.isfinite(y).sum())
        size = y.size
    if bad:
        raise FsnetError(
            f"the enhanced signal for {what} holds {bad} NaN/Inf sample(s) of {size}; refusing "
            "to write it (a damaged model, or input it cannot handle)"
        )
