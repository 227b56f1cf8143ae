"""Training loss terms on the enhanced spectrum (beside the cIRM loss in fsnet.system).

Both take the enhanced and clean complex spectra ``[B, F, T]`` and compare them after magnitude
compression ``|X|^p`` (Braun & Tashev 2021), which weighs quiet bins more than a linear error and
loud bins more than the cIRM loss does.
"""

from __future__ import annotations

import torch


def compress(spec: torch.Tensor, power: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(|X|^p, X |X|^(p-1))``: the compressed magnitude and the compressed complex spectrum."""
    # The small floor keeps the gradient of |x|^p finite in silent bins.
    magnitude = (spec.real.square() + spec.imag.square() + 1e-12).sqrt()
    compressed = magnitude.pow(power)
    return compressed, spec * (compressed / magnitude)


def spectrum_losses(
    enhanced: torch.Tensor, clean: torch.Tensor, power: float, complex_share: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spectral, residual)``, both float32 scalars, from one compression of each spectrum.

    spectral: MSE of the compressed complex spectra (``complex_share``) and of the compressed
    magnitudes (the rest).
    residual: mean square of the compressed magnitude the enhanced spectrum has *above* the clean
    one. Energy left where the speech has none is residual noise (what DNSMOS BAK hears);
    removing too much costs nothing here, so this term only adds to the symmetric spectral term
    on the side of under-suppression.
    """
    clean_mag, clean_c = compress(clean, power)
    enhanced_mag, enhanced_c = compress(enhanced, power)
    complex_term = (clean_c - enhanced_c).abs().square().mean()
    magnitude_term = (clean_mag - enhanced_mag).square().mean()
    spectral = complex_share * complex_term + (1.0 - complex_share) * magnitude_term
    residual = (enhanced_mag - clean_mag).clamp(min=0.0).square().mean()
    return spectral, residual


def spectral_loss(
    enhanced: torch.Tensor, clean: torch.Tensor, power: float, complex_share: float
) -> torch.Tensor:
    """The spectral term of ``spectrum_losses``."""
    return spectrum_losses(enhanced, clean, power, complex_share)[0]


def residual_loss(enhanced: torch.Tensor, clean: torch.Tensor, power: float) -> torch.Tensor:
    """The residual term of ``spectrum_losses``."""
    return spectrum_losses(enhanced, clean, power, 0.0)[1]
