"""The one front end shared by training, offline enhancement and streaming.

STFT framing pads ``n_fft - hop_samples`` zeros on the left, so frame ``t`` covers input samples
``[(t + 1) * hop - n_fft, (t + 1) * hop)`` and is complete as soon as sample ``(t + 1) * hop - 1``
has arrived. The streaming engine computes exactly the same frames from its input buffer.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

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


def apply_mask(noisy_spec: torch.Tensor, compressed_mask: torch.Tensor) -> torch.Tensor:
    """Enhanced complex spectrum ``[B, F, T]`` = noisy ``[B, F, T]`` * decompressed mask ``[B, 2, F, T]``."""
    real, imag = decompress_cirm(compressed_mask.float()).unbind(1)
    return noisy_spec * torch.complex(real, imag)
