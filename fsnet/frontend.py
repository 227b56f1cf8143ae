"""The one front end shared by training, offline enhancement and streaming.

STFT framing pads ``n_fft - hop_samples`` zeros on the left, so frame ``t`` covers input samples
``[(t + 1) * hop - n_fft, (t + 1) * hop)`` and is complete as soon as sample ``(t + 1) * hop - 1``
has arrived. The streaming engine computes exactly the same frames from its input buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from fsnet.errors import FsnetError

# Compression of the complex ideal ratio mask (Williamson et al., 2016), as in FullSubNet.
CIRM_K = 10.0  # the compressed mask lies in (-K, K)
CIRM_C = 0.1  # steepness
CIRM_LIMIT = 9.9  # compressed values are clipped to +-LIMIT before decompression
_CIRM_EPS = 1.1920928955078125e-07


class STFT(nn.Module):
    """Hann-window STFT / inverse STFT with left padding for causal framing.

    Buffers (window, overlap-add envelope) are not persistent: they are rebuilt from the config,
    and follow the module to its device.
    """

    def __init__(self, n_fft: int = 512, hop_samples: int = 256):
        super().__init__()
        if n_fft % hop_samples:
            raise ValueError("n_fft must be a multiple of hop_samples")
        self.n_fft = n_fft
        self.hop_samples = hop_samples
        window = torch.hann_window(n_fft)
        self.register_buffer("window", window, persistent=False)
        # Sum of squared windows over the frames overlapping one sample: the same for every sample
        # at or after index 0 thanks to the left padding.
        envelope = window.square().reshape(n_fft // hop_samples, hop_samples).sum(0)
        self.register_buffer("ola_envelope", envelope, persistent=False)

    @property
    def pad_samples(self) -> int:
        return self.n_fft - self.hop_samples

    @property
    def num_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames needed so that every one of ``num_samples`` samples is overlap-added fully."""
        if num_samples <= 0:
            return 0
        return (num_samples - 1 + self.pad_samples) // self.hop_samples + 1

    def analyze(self, frames: torch.Tensor) -> torch.Tensor:
        """Windowed FFT of raw frames ``[..., T, n_fft]`` -> complex spectrum ``[..., F, T]``."""
        return torch.fft.rfft(frames * self.window, dim=-1).transpose(-1, -2)

    def synthesize(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex spectrum ``[..., F, T]`` -> windowed time frames ``[..., T, n_fft]``.

        Overlap-adding consecutive frames and dividing by ``ola_envelope`` inverts ``analyze``.
        """
        return torch.fft.irfft(spec.transpose(-1, -2), n=self.n_fft, dim=-1) * self.window

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave [B, N]`` at the model rate -> complex ``[B, F, T]``, T = ``num_frames(N)``."""
        num_samples = wave.shape[-1]
        num_frames = self.num_frames(num_samples)
        total = (num_frames - 1) * self.hop_samples + self.n_fft if num_frames else self.n_fft
        padded = F.pad(wave, (self.pad_samples, total - self.pad_samples - num_samples))
        frames = padded.unfold(-1, self.n_fft, self.hop_samples)[..., :num_frames, :]
        return self.analyze(frames)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Complex ``[B, F, T]`` -> ``wave [B, length]``, the inverse of ``stft`` for that length."""
        frames = self.synthesize(spec)  # [B, T, n_fft]
        batch, num_frames, _ = frames.shape
        total = (num_frames - 1) * self.hop_samples + self.n_fft
        summed = F.fold(
            frames.transpose(1, 2),
            output_size=(1, total),
            kernel_size=(1, self.n_fft),
            stride=(1, self.hop_samples),
        ).reshape(batch, total)
        out = summed[:, self.pad_samples : self.pad_samples + length]
        # pad_samples is a multiple of hop, so sample m sits at envelope phase m % hop.
        reps = -(-out.shape[-1] // self.hop_samples)
        return out / self.ola_envelope.repeat(reps)[: out.shape[-1]]


def mel_filterbank(num_freqs: int, num_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK mel filters ``[num_freqs, num_mels]`` from torchaudio (as FullSubNet's MelScale)."""
    return torchaudio.functional.melscale_fbanks(
        n_freqs=num_freqs,
        f_min=0.0,
        f_max=sample_rate / 2,
        n_mels=num_mels,
        sample_rate=sample_rate,
        norm=None,
        mel_scale="htk",
    )


def build_cirm(noisy_spec: torch.Tensor, clean_spec: torch.Tensor) -> torch.Tensor:
    """Compressed complex ideal ratio mask, the training target.

    Args: complex ``[B, F, T]`` spectra of the noisy input and the clean target.
    Returns: ``[B, 2, F, T]`` (real, imaginary) in ``(-K, K)``.
    """
    nr, ni = noisy_spec.real, noisy_spec.imag
    cr, ci = clean_spec.real, clean_spec.imag
    denominator = nr.square() + ni.square() + _CIRM_EPS
    mask = torch.stack(
        ((nr * cr + ni * ci) / denominator, (nr * ci - ni * cr) / denominator), dim=1
    )
    # K (1 - e^{-Cx}) / (1 + e^{-Cx}) == K tanh(Cx / 2); the floor at -100 mirrors FullSubNet.
    return CIRM_K * torch.tanh(CIRM_C * mask.clamp(min=-100.0) / 2)


def decompress_cirm(mask: torch.Tensor) -> torch.Tensor:
    """Inverse of the compression in ``build_cirm``, after clipping to +-CIRM_LIMIT."""
    mask = mask.clamp(-CIRM_LIMIT, CIRM_LIMIT)
    # (2 / C) atanh(mask / K), the same ops in the same order, called as torch functions
    return torch.mul(torch.atanh(torch.div(mask, CIRM_K)), 2.0 / CIRM_C)


@dataclass(frozen=True)
class MaskShaping:
    """Inference-time shaping of the decompressed complex mask ``M``: noise-suppression strength.

    Both transforms act on each bin of each frame alone (no look-ahead, no state), so offline
    enhancement and the streaming engine shape identically. Training never shapes the mask.

    ``postfilter`` (>= 0, 0 = off): ``M' = M * min(|M|, 1) ** postfilter`` deepens the
    attenuation where the model already attenuates and leaves gains of 1 and above alone: more
    noise removed, at some cost to the speech in noisy bins.

    ``atten_lim_db`` (> 0 dB, None = unlimited): the most attenuation any bin gets, applied after
    the postfilter; DeepFilterNet's ``atten_lim`` in purpose, but a floor on the mask, not a mix of the
    enhanced and noisy signals: a bin whose ``|M'|`` is below ``g = 10 ** (-atten_lim_db / 20)``
    gets the real gain ``g``, i.e. the noisy bin scaled by ``g``, so every enhanced bin is at least
    that fraction of the noisy one (a mix ``g + (1 - g) M'`` can cancel where ``M'`` turns the
    phase around). Floored bins take the noisy phase, consistent from frame to frame, so a stretch
    the model silences comes out as the noisy signal itself turned down by ``atten_lim_db`` (with
    the mask's own phase, frames of random phase would partly cancel in the overlap-add).
    """

    postfilter: float = 0.0
    atten_lim_db: float | None = None

    def __post_init__(self) -> None:
        problem = _shaping_problem(self.postfilter, self.atten_lim_db, "postfilter", "atten_lim_db")
        if problem:
            raise FsnetError(problem)
        # plain floats (an int or numpy scalar from a config): comparable and JSON-ready
        object.__setattr__(self, "postfilter", float(self.postfilter))
        if self.atten_lim_db is not None:
            object.__setattr__(self, "atten_lim_db", float(self.atten_lim_db))

    @classmethod
    def checked(
        cls, postfilter: float, atten_lim_db: float | None, names: tuple[str, str]
    ) -> MaskShaping:
        """As the constructor, but the FsnetError names the options as the caller spells them
        (``names``: e.g. ``("--postfilter", "--atten-lim-db")``)."""
        problem = _shaping_problem(postfilter, atten_lim_db, *names)
        if problem:
            raise FsnetError(problem)
        return cls(postfilter, atten_lim_db)

    @property
    def active(self) -> bool:
        """Whether the mask is changed at all (off: ``apply_mask`` computes what it always did)."""
        return self.postfilter > 0 or self.atten_lim_db is not None

    @property
    def gain_floor(self) -> float:
        """The smallest mask magnitude ``atten_lim_db`` allows (0 when unlimited)."""
        return 0.0 if self.atten_lim_db is None else 10.0 ** (-self.atten_lim_db / 20.0)

    def describe(self) -> str:
        """``"postfilter 0.3, attenuation limit 12 dB"``, or ``"no mask shaping"``."""
        parts = []
        if self.postfilter > 0:
            parts.append(f"postfilter {self.postfilter:g}")
        if self.atten_lim_db is not None:
            parts.append(f"attenuation limit {self.atten_lim_db:g} dB")
        return ", ".join(parts) or "no mask shaping"

    def shape(self, mask: torch.Tensor) -> torch.Tensor:
        """Complex mask ``[B, F, T]`` -> the shaped mask, bin by bin."""
        magnitude = mask.abs()
        if self.postfilter > 0:
            gain = magnitude.clamp(max=1.0).pow(self.postfilter)
            mask = mask * gain
            magnitude = magnitude * gain
        if self.atten_lim_db is not None:
            mask = torch.where(magnitude >= self.gain_floor, mask, self.gain_floor)
        return mask


def _shaping_problem(
    postfilter: object, atten_lim_db: object, postfilter_name: str, atten_lim_name: str
) -> str | None:
    """What is wrong with the values of MaskShaping's fields, in one line, or None."""

    def number(value: object) -> float | None:
        if isinstance(value, bool):
            return None
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    problems = []
    p = number(postfilter)
    if p is None or not (math.isfinite(p) and p >= 0):
        problems.append(
            f"{postfilter_name} must be a finite number >= 0 (0 = off), got {postfilter!r}"
        )
    if atten_lim_db is not None:
        a = number(atten_lim_db)
        if a is None or not (math.isfinite(a) and a > 0):
            problems.append(
                f"{atten_lim_name} must be a finite number of dB > 0 (or null for no limit), "
                f"got {atten_lim_db!r}"
            )
    return "; ".join(problems) or None


def apply_mask(
    noisy_spec: torch.Tensor, compressed_mask: torch.Tensor, shaping: MaskShaping | None = None
) -> torch.Tensor:
    """Enhanced complex spectrum ``[B, F, T]`` = noisy ``[B, F, T]`` * decompressed mask ``[B, 2, F, T]``,
    shaped by ``shaping`` (inference only; None or inactive: the mask as the model gives it)."""
    real, imag = decompress_cirm(compressed_mask.float()).unbind(1)
    mask = torch.complex(real, imag)
    if shaping is not None and shaping.active:
        mask = shaping.shape(mask)
    return noisy_spec * mask
