"""Offline enhancement of whole signals."""

from __future__ import annotations

import numpy as np
import torch

from fsnet.audio import as_float_samples
from fsnet.frontend import apply_mask
from fsnet.model import FastFullSubNet


def enhance_batch(model: FastFullSubNet, wave: torch.Tensor) -> torch.Tensor:
    """Enhance ``wave [B, N]`` (model sample rate, on the model's device) -> ``[B, N]``, time-aligned."""
    spec = model.stft.stft(wave)
    mask = model(spec.abs()[:, None])
    return model.stft.istft(apply_mask(spec, mask), wave.shape[-1])


@torch.inference_mode()
def enhance(model: FastFullSubNet, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Enhance a 1-D signal at ``model.config.sample_rate`` (16 kHz by default).

    Returns the same type and length as ``x``, aligned sample for sample (no delay), as float32.
    Integer samples are scaled by their type's full scale (``fsnet.audio.as_float_samples``:
    int16 / 32768, ...); None, text or int64 raise TypeError.
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
    else:
        out = enhance_batch(model, wave.to(device)[None])[0]
    return out.cpu().numpy() if is_numpy else out.to(x.device)
