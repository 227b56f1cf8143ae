"""Mixing a batch of training examples on the training device, from the loader's components.

With ``data.mix_on=device`` the DataLoader workers only read and draw
(:meth:`~fsnet.data.datasets.TrainingMixtures.draw`): each example arrives as its
:class:`~fsnet.data.mixing.Components`, :func:`collate_components` pads them into one batch, and
after the batch is on the device :func:`mix_batch` does the arithmetic of
:func:`~fsnet.data.mixing.mix_components` for the whole batch at once: reverberation (FFT
convolution), the early-reflection target, colouring, overlay, SNR, level and peak limit. All the
randomness was drawn in the loader, so the mixtures are those of the CPU path to float32 rounding
(``tests/test_batch_mixing.py`` checks each example) and as reproducible.

Colouring is the one place where the batched path is not the CPU's algorithm: ``lfilter`` is a
recursion over samples (a loop of 49,152 steps on a GPU), so here the biquad's impulse response,
truncated to ``K`` taps, is applied by FFT convolution (:func:`colour`). With every coefficient in
``[-limit, limit]`` the poles lie within radius ``r(limit)`` (0.83 at RNNoise's 0.375), so
``|h[k]| <= (1 + 2 limit) (k + 1) r^(k-2)`` and :func:`eq_tail_taps` picks ``K`` so that the
left-out tail sums to less than ``EQ_TAIL_TOLERANCE`` (1e-8): each output sample is then within
``2e-8`` of the signal's peak of lfilter's (192 taps at 0.375; float32 rounding is 6e-8).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fsnet.data.mixing import EARLY_REFLECTIONS_SECONDS, Components, MixingConfig

EQ_TAIL_TOLERANCE = 1e-8  # colouring error bound, relative to the signal's peak (float32: 6e-8)
PAD_MULTIPLE = 1024  # RIR taps and speech context are padded to multiples of this: few FFT sizes


def components_item(c: Components) -> dict[str, Any]:
    """One example's components as tensors and numbers (what a DataLoader worker returns)."""
    no_eq = np.zeros(4)
    return {
        "speech": torch.from_numpy(np.ascontiguousarray(c.speech, dtype=np.float32)),
        "lead": int(c.lead),
        "rir": None if c.rir is None else torch.from_numpy(c.rir.astype(np.float32)),
        "noise": torch.from_numpy(np.ascontiguousarray(c.noise, dtype=np.float32)),
        "overlay": None if c.overlay is None else torch.from_numpy(c.overlay.astype(np.float32)),
        "overlay_db": 0.0 if c.overlay_db is None else float(c.overlay_db),
        "snr_db": float(c.snr_db),
        "level_dbfs": float(c.level_dbfs),
        "clean_eq": _eq_row(c.clean_eq, no_eq),
        "noise_eq": _eq_row(c.noise_eq, no_eq),
        "has_clean_eq": c.clean_eq is not None,
        "has_noise_eq": c.noise_eq is not None,
    }


def _eq_row(eq: tuple[np.ndarray, np.ndarray] | None, default: np.ndarray) -> np.ndarray:
    """``(b1, b2, a1, a2)`` of a biquad ``(b, a)`` with ``b[0] = a[0] = 1``."""
    return default if eq is None else np.array([eq[0][1], eq[0][2], eq[1][1], eq[1][2]])


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _buffer(*shape: int) -> torch.Tensor:
    """An uninitialised float32 tensor; in a DataLoader worker, in shared memory (as
    ``default_collate`` does), so handing the batch over copies nothing more."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape)
    storage = torch.empty(0)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0).new(storage).view(shape)


def collate_components(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A batch of components, all tensors (so the batch moves to the device as one).

    ``speech [B, context + segment]``: every example's segment starts at column ``context``
    (zeros before an example's own context, as the CPU's convolution assumes); ``rir [B, taps]``
    zero-padded, ``has_rir [B]``; ``noise``, ``overlay [B, segment]`` (zeros where
    ``has_overlay`` is false; ``[B, 0]`` when no example has one, which saves moving 14 MB of
    zeros per batch of 72); ``overlay_db``, ``snr_db``, ``level_dbfs [B]`` float64;
    ``clean_eq``, ``noise_eq [B, 4]`` float64 ``(b1, b2, a1, a2)`` with ``has_clean_eq``,
    ``has_noise_eq [B]``.
    """
    batch, seg = len(items), items[0]["noise"].shape[0]
    longest = max([1] + [item["rir"].shape[0] for item in items if item["rir"] is not None])
    # context >= taps - 1: no wrap-around of the FFT convolution reaches the segment
    context = _round_up(max([longest - 1] + [item["lead"] for item in items]), PAD_MULTIPLE)
    # empty + zeroing only the padding: zeros() would write every sample twice
    speech = _buffer(batch, context + seg)
    rir = _buffer(batch, _round_up(longest, PAD_MULTIPLE))
    noise = _buffer(batch, seg)
    overlay = _buffer(batch, seg if any(item["overlay"] is not None for item in items) else 0)
    for i, item in enumerate(items):
        start = context - item["lead"]
        speech[i, :start] = 0.0
        speech[i, start:] = item["speech"]
        taps = 0 if item["rir"] is None else item["rir"].shape[0]
        rir[i, :taps] = item["rir"] if taps else 0.0
        rir[i, taps:] = 0.0
        noise[i] = item["noise"]
        if overlay.shape[1]:
            overlay[i] = 0.0 if item["overlay"] is None else item["overlay"]

    def column(key: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor([item[key] for item in items], dtype=dtype)

    return {
        "speech": speech,
        "rir": rir,
        "has_rir": torch.tensor([item["rir"] is not None for item in items]),
        "noise": noise,
        "overlay": overlay,
        "has_overlay": torch.tensor([item["overlay"] is not None for item in items]),
        "overlay_db": column("overlay_db"),
        "snr_db": column("snr_db"),
        "level_dbfs": column("level_dbfs"),
        "clean_eq": torch.from_numpy(np.stack([item["clean_eq"] for item in items])),
        "noise_eq": torch.from_numpy(np.stack([item["noise_eq"] for item in items])),
        "has_clean_eq": column("has_clean_eq", torch.bool),
        "has_noise_eq": column("has_noise_eq", torch.bool),
    }


def is_components(batch: Any) -> bool:
    """Whether ``batch`` is a :func:`collate_components` batch (and not mixtures or validation)."""
    return isinstance(batch, dict) and "speech" in batch and "has_rir" in batch


# ------------------------------------------------------------------------------------ mixing
def mix_batch(
    batch: dict[str, torch.Tensor], mixing: MixingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy, target)`` float32 ``[B, segment]`` on the batch's device: what
    :func:`~fsnet.data.mixing.mix_components` makes of each example, in the same order.
    """
    device = batch["noise"].device
    with torch.autocast(device.type, enabled=False), torch.no_grad():
        noise = batch["noise"].float()
        seg = noise.shape[1]
        target, reverberant = _reverberate(batch, seg, mixing)
        if mixing.noise_overlay_probability > 0 and batch["overlay"].shape[1]:
            noise = _overlay(noise, batch["overlay"], batch["has_overlay"], batch["overlay_db"])
        # one colouring pass over the signals a config colours (decided by the config, not the
        # batch's flags: reading those would wait for the device)
        plain = {}
        if mixing.clean_eq_probability > 0:
            plain["target"] = (target, batch["clean_eq"], batch["has_clean_eq"])
            if reverberant is not target:
                plain["reverberant"] = (reverberant, batch["clean_eq"], batch["has_clean_eq"])
        if mixing.noise_eq_probability > 0:
            plain["noise"] = (noise, batch["noise_eq"], batch["has_noise_eq"])
        if plain:
            signals, eqs, flags = (torch.cat(parts) for parts in zip(*plain.values(), strict=True))
            coloured = colour(signals, eqs, mixing.eq_coefficient_limit)
            coloured = torch.where(flags[:, None], coloured, signals).chunk(len(plain))
            new = dict(zip(plain, coloured, strict=True))
            early = reverberant is not target
            target = new.get("target", target)
            reverberant = new.get("reverberant", reverberant) if early else target
            noise = new.get("noise", noise)
        return _mix_at_snr(target, reverberant, noise, batch, mixing.peak_limit)


def _fft_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n`` (sizes the FFT libraries handle fastest)."""
    best = 1 << max(0, (n - 1).bit_length())
    power3 = 1
    while power3 < best:
        power5 = power3
        while power5 < best:
            size = power5 << max(0, math.ceil(math.log2(n / power5)))
            while size < n:  # log2 rounded down
                size <<= 1
            best = min(best, size)
            power5 *= 5
        power3 *= 3
    return best


def _reverberate(
    batch: dict[str, torch.Tensor], seg: int, mixing: MixingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, reverberant speech) [B, seg]`` (the same tensor unless ``reverb_target=early``)."""
    speech, rir, has_rir = batch["speech"].float(), batch["rir"].float(), batch["has_rir"]
    context = speech.shape[1] - seg
    dry = speech[:, context:]
    if rir.device.type == "cpu" and not bool(has_rir.any()):  # (on a GPU the test would sync)
        return dry, dry
    size = _fft_size(speech.shape[1])  # >= context + seg: no wrap-around reaches the segment
    spectrum = torch.fft.rfft(speech, size)

    def convolve(response: torch.Tensor) -> torch.Tensor:
        wet = torch.fft.irfft(spectrum * torch.fft.rfft(response, size), size)
        return torch.where(has_rir[:, None], wet[:, context : context + seg], dry)

    reverberant = convolve(rir)
    if mixing.reverb_target != "early":
        return reverberant, reverberant
    peak = torch.argmax(rir.abs(), dim=1, keepdim=True)  # the first of equal peaks, as numpy
    keep = peak + int(EARLY_REFLECTIONS_SECONDS * mixing.sample_rate) + 1
    taps = torch.arange(rir.shape[1], device=rir.device)
    return convolve(torch.where(taps < keep, rir, 0.0)), reverberant


def _power(x: torch.Tensor) -> torch.Tensor:
    """Mean square of each row of ``x [B, N]``, accumulated in float64 ``[B]``."""
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).square() / x.shape[1]


def _overlay(
    noise: torch.Tensor, extra: torch.Tensor, has: torch.Tensor, level_db: torch.Tensor
) -> torch.Tensor:
    """:func:`~fsnet.data.mixing.overlay_noise` per row where ``has``."""
    noise_power, extra_power = _power(noise), _power(extra)
    gain = torch.where(
        noise_power > 0,
        torch.sqrt(noise_power / extra_power) * 10.0 ** (level_db / 20.0),
        torch.ones_like(noise_power),
    )
    gain = torch.where(has & (extra_power > 0), gain, torch.zeros_like(gain))
    return noise + gain.float()[:, None] * extra  # gain 0: the noise as it was


@functools.lru_cache(maxsize=16)
def eq_tail_taps(limit: float, tolerance: float = EQ_TAIL_TOLERANCE) -> int:
    """Taps ``K`` (a multiple of 64) beyond which a colouring filter's impulse response sums to
    less than ``tolerance``, for any coefficients in ``[-limit, limit]`` (limit < 0.5)."""
    # largest pole radius of 1 + a1 z^-1 + a2 z^-2: real poles at a1 = +-limit, a2 = -limit,
    # complex ones at radius sqrt(a2)
    radius = max((limit + math.sqrt(limit * limit + 4 * limit)) / 2, math.sqrt(limit))
    if radius == 0.0:
        return 64
    gain = 1.0 + 2.0 * limit  # the numerator's taps
    k = 3
    # sum over taps >= k of gain (k + 1) r^(k - 2), in closed form
    while (
        gain * radius ** (k - 2) * ((k + 1) / (1 - radius) + radius / (1 - radius) ** 2)
        >= tolerance
    ):
        k += 1
    return _round_up(k, 64)


def colour(x: torch.Tensor, coefficients: torch.Tensor, limit: float) -> torch.Tensor:
    """Each row of ``x [R, N]`` through its biquad ``coefficients [R, 4]`` = ``(b1, b2, a1, a2)``
    from rest, as ``scipy.signal.lfilter``, to within ``2 EQ_TAIL_TOLERANCE`` of ``x``'s peak.

    The filter's first ``K = eq_tail_taps(limit)`` taps come from ``B / A`` on a small grid of
    ``>= 2 K`` points (its inverse FFT aliases only taps past ``2 K`` onto them), then one FFT
    convolution of ``N + K`` points applies them exactly; the taps past ``K`` are left out.
    """
    length = x.shape[1]
    taps = eq_tail_taps(limit)
    grid = _fft_size(2 * taps)
    angle = torch.arange(grid // 2 + 1, device=x.device, dtype=torch.float64) * (2 * math.pi / grid)
    delay = torch.polar(torch.ones_like(angle), -angle)  # z^-1 on the grid
    c = coefficients.to(device=x.device, dtype=torch.complex128)
    response = (1 + c[:, 0:1] * delay + c[:, 1:2] * delay.square()) / (
        1 + c[:, 2:3] * delay + c[:, 3:4] * delay.square()
    )
    impulse = torch.fft.irfft(response, grid)[:, :taps].float()
    size = _fft_size(length + taps)
    return torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(impulse, size), size)[
        :, :length
    ]


def _mix_at_snr(
    target: torch.Tensor,
    reverberant: torch.Tensor,
    noise: torch.Tensor,
    batch: dict[str, torch.Tensor],
    peak_limit: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~fsnet.data.mixing.mix_at_snr` of ``reverberant`` and ``noise`` per row; an early
    ``target`` is scaled as the mixed speech was.

    The per-row gains are float64 from float64 sums, as the CPU's; the signals stay float32 (the
    CPU's float64 samples are rounded to float32 at the end, so this differs by a few ulps).
    """
    snr, level = batch["snr_db"].double(), batch["level_dbfs"].double()
    speech_power, noise_power = _power(reverberant), _power(noise)
    both = (noise_power > 0) & (speech_power > 0)
    scale = torch.sqrt(speech_power / (noise_power * 10.0 ** (snr / 10.0)))
    scale = torch.where(both, scale, torch.where(speech_power > 0, 0.0, 1.0))
    noisy = reverberant + noise * scale.float()[:, None]
    noisy_power = _power(noisy)
    gain = torch.where(noisy_power > 0, 10.0 ** (level / 20.0) / noisy_power.sqrt(), 1.0)
    peak = gain * torch.maximum(noisy.abs().amax(dim=1), reverberant.abs().amax(dim=1))
    gain = gain * torch.where(peak > peak_limit, peak_limit / peak, 1.0)
    gain = gain.float()[:, None]
    return noisy * gain, target * gain
