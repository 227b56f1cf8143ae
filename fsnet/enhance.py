"""Offline enhancement of whole signals, in bounded memory for any length."""

from __future__ import annotations

import numpy as np
import torch

from fsnet.audio import as_float_samples
from fsnet.frontend import MaskShaping, apply_mask
from fsnet.model import FastFullSubNet
from fsnet.streaming import AlignedOutput, StreamingEnhancer

# Audio per network call in ``enhance``: long enough that the per-call cost vanishes next to the
# frames' own, short enough that the working memory (about 12 MB per second of audio for the
# paper-size model) stays small on any machine.
DEFAULT_CHUNK_SECONDS = 10.0


def enhance_batch(
    model: FastFullSubNet, wave: torch.Tensor, shaping: MaskShaping | None = None
) -> torch.Tensor:
    """Enhance ``wave [B, N]`` (model sample rate, on the model's device) -> ``[B, N]``, time-aligned.

    The whole signal in one forward: memory grows with ``N`` (training, short batches).
    ``shaping``: the noise-suppression strength (``fsnet.frontend.MaskShaping``; None = off)."""
    spec = model.stft.stft(wave)
    mask = model(spec.abs()[:, None])
    return model.stft.istft(apply_mask(spec, mask, shaping), wave.shape[-1])


@torch.inference_mode()
def enhance(
    model: FastFullSubNet,
    x: np.ndarray | torch.Tensor,
    chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
    shaping: MaskShaping | None = None,
) -> np.ndarray | torch.Tensor:
    """Enhance a 1-D signal at ``model.config.sample_rate`` (16 kHz by default).

    Returns the same type and length as ``x``, aligned sample for sample (no delay). The network
    runs over ``chunk_seconds`` of audio at a time with its state carried from chunk to chunk, so
    memory (host and GPU) is bounded by the chunk length whatever the input length; the result
    equals one whole-signal forward to float rounding. ``chunk_seconds=None`` runs the whole
    signal at once, as does a model with utterance-level norm (that norm needs all of it).
    The result is float32; integer samples are scaled by their type's full scale (``fsnet.audio.as_float_samples``:
    int16 / 32768, ...); None, text or int64 raise TypeError.
    ``shaping`` sets the noise-suppression strength (``fsnet.frontend.MaskShaping``: postfilter,
    attenuation limit; None = the mask as the model gives it), exactly as the streaming engine
    applies it.
    """
    is_numpy = not isinstance(x, torch.Tensor)
    wave = torch.as_tensor(as_float_samples(x))  # int16 etc. scaled by their full scale
    if wave.dim() != 1:
        raise ValueError(f"enhance takes a 1-D signal, got shape {tuple(wave.shape)}")
    if not bool(torch.isfinite(wave).all()):
        raise ValueError("input contains NaN or infinite samples")
    device = model.stft.window.device
    if wave.numel() == 0:
        out = wave.clone()
    elif chunk_seconds is None or model.norm != "cumulative":
        out = enhance_batch(model, wave.to(device)[None], shaping)[0]
    else:
        out = _enhance_in_chunks(model, wave, chunk_seconds, shaping)
    return out.cpu().numpy() if is_numpy else out.to(x.device)


def _enhance_in_chunks(
    model: FastFullSubNet, wave: torch.Tensor, chunk_seconds: float, shaping: MaskShaping | None
) -> torch.Tensor:
    """``wave [N]`` through a streaming engine ``chunk_seconds`` at a time -> ``[N]`` aligned, on
    ``wave``'s device; only one chunk at a time is on the model's device (CPU or GPU alike)."""
    was_training = model.training  # the engine puts the model in eval mode
    engine = StreamingEnhancer(model, max_chunk_seconds=chunk_seconds, shaping=shaping)
    chunk_samples = engine.max_chunk_frames * engine.hop_samples  # whole hops: one call, one chunk
    out = torch.empty_like(wave)
    align = AlignedOutput(engine.latency_samples)
    filled = 0  # samples of ``out`` written so far

    def place(y: torch.Tensor) -> None:
        nonlocal filled
        y = align(y)[: out.shape[-1] - filled]
        out[filled : filled + y.shape[-1]] = y.to(out.device)
        filled += y.shape[-1]

    try:
        for start in range(0, wave.shape[-1], chunk_samples):
            place(engine.process(wave[start : start + chunk_samples]))
        place(engine.flush())
    finally:
        model.train(was_training)
    if filled != out.shape[-1]:
        raise RuntimeError(f"the engine produced {filled} aligned samples for {out.shape[-1]}")
    return out
