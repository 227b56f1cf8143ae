"""Causal cumulative Laplace norm: divide each frame by the mean of everything seen so far.

One function serves both forms: a whole sequence at once (training, offline) and frame-by-frame
chunks with carried state (streaming). The running sum is kept in float64 so that an hour of
audio (225,000 frames) loses no precision; the normalised output is float32.
"""

from __future__ import annotations

import torch

# (running sum per row, float64 [N]; frames seen so far, an int or a float64 0-d tensor)
NormState = tuple[torch.Tensor, "int | torch.Tensor"]


def cumulative_laplace_norm(
    x: torch.Tensor, state: NormState | None = None, eps: float = 1.1920928955078125e-07
) -> tuple[torch.Tensor, NormState]:
    """Normalise ``x [N, C, T]`` by the running mean over ``C`` and all frames up to each ``t``.

    ``state`` carries the sums of earlier chunks; pass None at the start of a stream.
    Digital silence gives zeros, not NaN: the mean is 0 and ``eps`` keeps the division finite.
    """
    num_rows, num_channels, num_frames = x.shape
    if state is None:
        running_sum = torch.zeros(num_rows, dtype=torch.float64, device=x.device)
        frames_seen = 0
    else:
        running_sum, frames_seen = state
    # A streaming hop's norm is a handful of tiny ops, each costing more in dispatch than in
    # arithmetic: the float64 sum straight from float32, in place where the tensor is fresh, and
    # unsqueeze / select rather than Python's indexing syntax (which costs more than they do).
    cumulative = x.sum(1, dtype=torch.float64).cumsum_(-1).add_(running_sum.unsqueeze(1))
    if isinstance(frames_seen, torch.Tensor):
        # a tensor so that a captured CUDA graph (or an ONNX graph) reads it at replay time
        steps = torch.arange(1, num_frames + 1, device=x.device, dtype=torch.float64)
        count = (steps + frames_seen) * num_channels
    else:  # the same integers in one op
        first = (frames_seen + 1) * num_channels
        count = torch.arange(
            first,
            first + num_frames * num_channels,
            num_channels,
            device=x.device,
            dtype=torch.float64,
        )
    mean = torch.div(cumulative, count).to(torch.float32).unsqueeze(1)
    normed = torch.div(x.float(), mean.add_(eps))
    return normed, (cumulative.select(1, -1), frames_seen + num_frames)


def utterance_laplace_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Original FullSubNet's offline norm: divide ``x [B, ...]`` by its mean over all but dim 0.

    Not causal; only for reproducing checkpoints trained that way (they cannot stream exactly).
    """
    mean = x.float().mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return x.float() / (mean + eps)
