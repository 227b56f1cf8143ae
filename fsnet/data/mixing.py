"""How a training example is mixed: the mixing rule, its configuration and the augmentations.

As in FullSubNet: a random 3.072 s segment of a random clean file, noise made of random noise files
joined by 0.2 s silences, SNR uniform in [-5, 20] dB, reverberation with probability 0.75 (the
clean segment convolved with a random RIR; the *reverberant* clean is the training target, as in
the original recipe, so the network removes noise but not reverberation; ``reverb_target: early``
keeps only the direct path and 50 ms of early reflections in the target instead), mixture level
-25 dBFS +- 10 dB, and both signals scaled down together if either would exceed 0.999. Optionally
(off by default; the small ``debian_audio`` recipe turns it on) the speech and/or the noise is
played faster or slower by a random factor, which moves pitch and formants: more voices and sounds
from a corpus of few speakers; and the speech and/or the noise is coloured by a random second-order
filter (RNNoise's augmentation: new microphones and rooms for the same recordings; the target keeps
the speech's colouring, so the network learns to leave it alone); and the noise gets busier: a
random gain per joined noise file and, sometimes, a second noise track laid over the first.

:class:`MixingConfig` is the ``data.mixing`` config group; :mod:`fsnet.data.datasets` draws the
examples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from fsnet.audio import SAMPLE_RATE
from fsnet.data.corpus import AudioEntry
from fsnet.errors import FsnetError

# Speed factors are drawn on a grid of 1/50 (2 %): the resampling ratio is then 50 : (50 + k), whose
# small terms keep the polyphase filter short; a free real factor can make it thousands of taps.
SPEED_GRID_STEPS = 50
EARLY_REFLECTIONS_SECONDS = 0.05  # reverb_target=early keeps the RIR up to 50 ms after its peak
_PROBABILITIES = (
    "clean_speed_probability",
    "noise_speed_probability",
    "clean_eq_probability",
    "noise_eq_probability",
    "noise_overlay_probability",
)
_NUMBERS = (
    "segment_seconds",
    "target_level_dbfs",
    "target_level_jitter_db",
    "reverb_probability",
    "peak_limit",
    "eq_coefficient_limit",
    "noise_gain_jitter_db",
    *_PROBABILITIES,
)


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (an RMS of 1.0 is 0 dBFS)."""
    return 10.0 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-20)


def mix_at_snr(
    clean: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    level_dbfs: float,
    peak_limit: float = 0.999,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Mix ``clean`` (the target) and ``noise`` at ``snr_db``, then set the mixture RMS to ``level_dbfs``.

    The one mixing rule of the project: training examples and the recipes' fixed test pairs both
    come from here. The target is scaled with the mixture, so the SNR is exact. If the mixture or
    the target would exceed ``peak_limit`` both are scaled down together (the level then ends up
    lower than asked). A silent noise leaves the mixture equal to the target. ``clean``, ``noise``:
    1-D ``[N]`` of equal length, same rate. Computed in float64; returns ``(noisy [N], target [N])``
    as ``dtype`` (float32 for training; float64 keeps the precision for 16-bit files).
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if clean.shape != noise.shape:
        raise ValueError(f"clean and noise lengths differ: {clean.shape} vs {noise.shape}")
    clean_power = float(np.mean(clean**2))
    noise_power = float(np.mean(noise**2))
    if noise_power > 0.0 and clean_power > 0.0:
        noise = noise * math.sqrt(clean_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    elif clean_power > 0.0:
        noise = np.zeros_like(noise)
    noisy = clean + noise
    noisy_rms = math.sqrt(float(np.mean(noisy**2)))
    if noisy_rms > 0.0:
        gain = 10.0 ** (level_dbfs / 20.0) / noisy_rms
        noisy, clean = noisy * gain, clean * gain
    peak = max(float(np.max(np.abs(noisy), initial=0.0)), float(np.max(np.abs(clean), initial=0.0)))
    if peak > peak_limit:
        noisy, clean = noisy * (peak_limit / peak), clean * (peak_limit / peak)
    return noisy.astype(dtype), clean.astype(dtype)


@dataclass
class MixingConfig:
    """How training examples are made (see the module docstring)."""

    sample_rate: int = SAMPLE_RATE  # Hz
    segment_seconds: float = 3.072  # length of a training example
    snr_range_db: tuple[float, float] = (-5.0, 20.0)  # SNR drawn uniformly in [low, high] dB
    target_level_dbfs: float = -25.0  # mixture RMS level, dBFS
    target_level_jitter_db: float = 10.0  # level drawn uniformly in target +- jitter dB
    reverb_probability: float = 0.75  # chance an example is reverberated (needs RIRs)
    reverb_target: str = "reverberant"  # reverberant | early
    # gap between joined noise files: a number, or [low, high] for a gap drawn per join (long
    # gaps make runs of one-shot effects start out of near-silence, as door slams and dishes do)
    silence_between_noises_seconds: float | tuple[float, float] = 0.2
    short_clean: str = "pad"  # pad | loop: clean files shorter than a segment
    peak_limit: float = 0.999  # largest allowed absolute sample value
    # Speed perturbation (tempo and pitch together, as Kaldi's speed perturbation): a factor f
    # plays f times faster. Speech gets new voices (formants and pitch move), noise new sounds.
    clean_speed_probability: float = 0.0  # chance the clean speech of an example is perturbed
    noise_speed_probability: float = 0.0  # chance the noise of an example is perturbed
    speed_factor_range: tuple[float, float] = (0.9, 1.1)  # factor drawn uniformly (2 % grid)
    # Random colouring: a biquad whose four feedforward/feedback coefficients are drawn uniformly
    # in [-limit, limit]; below 0.5 both its poles and zeros stay inside the unit circle (stable,
    # no deep notch). 0.375 (RNNoise's) tilts a band by at most about +-17 dB.
    clean_eq_probability: float = 0.0  # chance the speech (and so the target) is coloured
    noise_eq_probability: float = 0.0  # chance the noise is coloured (its own filter)
    eq_coefficient_limit: float = 0.375
    # Busier noise: each noise file joined into a segment gets its own gain (uniform in +-jitter dB,
    # so a run of effects is not one loudness), and with some probability a second, independent
    # noise track (drawn like the first) is laid over it at a level relative to the first.
    noise_gain_jitter_db: float = 0.0
    noise_overlay_probability: float = 0.0
    noise_overlay_level_range_db: tuple[float, float] = (-10.0, 0.0)
    # file: every noise file equally likely. folder: every folder of noise files equally likely,
    # then a file in it, so a source with few files (short effects) is heard as often as one with
    # many (long music cut into segments).
    noise_balance: str = "file"
    # folder mode only: relative weight of a noise folder, by its name (the last path component:
    # recipes keep one flat folder per source); folders not named weigh 1, 0 leaves a folder out.
    # A name that matches no folder, or several, is an error (see group_noise_files).
    noise_folder_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Hydra hands YAML integers (-25) and typos as text; every number becomes a float here
        problems = []
        for name in _NUMBERS:
            value = getattr(self, name)
            try:
                if isinstance(value, bool):
                    raise TypeError
                setattr(self, name, float(value))
            except (TypeError, ValueError):
                problems.append(f"{name} must be a number, got {value!r}")
        if problems:
            raise FsnetError("invalid data config: " + "; ".join(problems))
        self.sample_rate = int(self.sample_rate)
        for name in ("snr_range_db", "speed_factor_range", "noise_overlay_level_range_db"):
            value = getattr(self, name)
            try:
                setattr(self, name, tuple(float(v) for v in value))
            except (TypeError, ValueError):
                raise FsnetError(
                    f"invalid data config: {name} must be [low, high], got {value!r}"
                ) from None
        given = self.silence_between_noises_seconds
        try:
            gap = (given, given) if isinstance(given, (int, float)) else tuple(map(float, given))
        except (TypeError, ValueError):
            gap = ()
        self.silence_between_noises_seconds = gap  # type: ignore[assignment]
        problems = []
        if len(gap) != 2 or not 0.0 <= gap[0] <= gap[1]:
            problems.append(
                "silence_between_noises_seconds must be a number >= 0 or [low, high] with"
                f" 0 <= low <= high, got {given!r}"
            )
        problems += self._range_problems() + self._choice_problems()
        if (
            self.segment_seconds <= 0
            or self.target_level_jitter_db < 0
            or self.noise_gain_jitter_db < 0
        ):
            problems.append(
                "segment_seconds must be > 0; target_level_jitter_db and noise_gain_jitter_db >= 0"
            )
        if problems:
            raise FsnetError("invalid data config: " + "; ".join(problems))

    def _range_problems(self) -> list[str]:
        """What is wrong with the numeric fields (probabilities, ranges, limits)."""
        problems = [
            f"{name} must be in [0, 1]"
            for name in _PROBABILITIES
            if not 0.0 <= getattr(self, name) <= 1.0
        ]
        low, high = (self.speed_factor_range + (0.0, 0.0))[:2]
        if len(self.speed_factor_range) != 2 or not 0.5 <= low <= high <= 2.0:
            problems.append(
                f"speed_factor_range must be [low, high] within [0.5, 2], got {list(self.speed_factor_range)}"
            )
        if not 0.0 <= self.eq_coefficient_limit < 0.5:
            problems.append(
                f"eq_coefficient_limit must be in [0, 0.5) (stable filters), got {self.eq_coefficient_limit}"
            )
        overlay = self.noise_overlay_level_range_db
        if len(overlay) != 2 or overlay[0] > overlay[1]:
            problems.append(
                f"noise_overlay_level_range_db must be [low, high], got {list(overlay)}"
            )
        if len(self.snr_range_db) != 2 or self.snr_range_db[0] > self.snr_range_db[1]:
            problems.append(f"snr_range_db must be [low, high], got {list(self.snr_range_db)}")
        if not 0.0 <= self.reverb_probability <= 1.0:
            problems.append("reverb_probability must be in [0, 1]")
        return problems

    def _choice_problems(self) -> list[str]:
        """What is wrong with the named choices and the folder weights (which it normalises)."""
        problems = []
        if self.reverb_target not in ("reverberant", "early"):
            problems.append(
                f"reverb_target must be reverberant or early, got {self.reverb_target!r}"
            )
        if self.short_clean not in ("pad", "loop"):
            problems.append(f"short_clean must be pad or loop, got {self.short_clean!r}")
        if self.noise_balance not in ("file", "folder"):
            problems.append(f"noise_balance must be file or folder, got {self.noise_balance!r}")
        try:
            weights = {str(k): float(v) for k, v in dict(self.noise_folder_weights or {}).items()}
        except (TypeError, ValueError):
            weights = {"": -1.0}  # reported just below
        if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
            problems.append(
                "noise_folder_weights must map folder names to finite numbers >= 0,"
                f" got {self.noise_folder_weights!r}"
            )
        self.noise_folder_weights = weights
        if weights and self.noise_balance != "folder":
            problems.append("noise_folder_weights needs noise_balance=folder")
        return problems

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    def speed_steps(self) -> tuple[int, int]:
        """The factor range as grid steps ``(k_low, k_high)``: factor = 1 + k / SPEED_GRID_STEPS."""
        low, high = self.speed_factor_range
        k_low = math.ceil(round((low - 1.0) * SPEED_GRID_STEPS, 6))
        k_high = math.floor(round((high - 1.0) * SPEED_GRID_STEPS, 6))
        return k_low, max(k_low, k_high)


def change_speed(x: np.ndarray, factor_steps: int, length: int) -> np.ndarray:
    """Play ``x [N]`` ``1 + factor_steps / 50`` times faster; the first ``length`` samples.

    Resampling from a virtual rate of ``(50 + k)`` to ``50`` units shortens the signal by the
    factor and raises pitch and formants alike. Zero-padded if ``x`` was too short.
    """
    if factor_steps == 0:
        y = x
    else:
        # scipy's polyphase filter on the reduced ratio: 0.6-1.1 ms for a 3 s segment on the
        # 2-core dev box (torchaudio's sinc resampler: 0.5-4.1 ms at the same ratios).
        up, down = SPEED_GRID_STEPS, SPEED_GRID_STEPS + factor_steps
        divisor = math.gcd(up, down)
        y = resample_poly(np.asarray(x, dtype=np.float32), up // divisor, down // divisor)
    y = y[:length]
    if y.shape[0] < length:
        y = np.pad(y, (0, length - y.shape[0]))
    return np.ascontiguousarray(y, dtype=np.float32)


def random_eq(rng: np.random.Generator, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of a random biquad ``(1 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)``, the four
    coefficients uniform in ``[-limit, limit]`` (stable and minimum-phase for ``limit < 0.5``)."""
    b1, b2, a1, a2 = rng.uniform(-limit, limit, 4)
    return np.array([1.0, b1, b2]), np.array([1.0, a1, a2])


def overlay_noise(noise: np.ndarray, extra: np.ndarray, level_db: float) -> np.ndarray:
    """``noise + extra`` with ``extra`` scaled to ``level_db`` relative to ``noise``'s RMS (both
    ``[N]``, same rate); a silent ``noise`` takes ``extra`` as it is, a silent ``extra`` adds nothing."""
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    extra_power = float(np.mean(np.square(extra, dtype=np.float64)))
    if extra_power == 0.0:
        return noise
    gain = (
        math.sqrt(noise_power / extra_power) * 10.0 ** (level_db / 20.0) if noise_power > 0 else 1.0
    )
    return (noise + gain * extra).astype(np.float32)


@dataclass
class Components:
    """Everything one training example is mixed from: what was read and every number drawn.

    The loader draws these (:meth:`fsnet.data.datasets.TrainingMixtures.draw`); the mixture is
    :func:`mix_components` in the loader or :func:`fsnet.data.batch_mixing.mix_batch` on the
    training device, which agree to float32 precision. Arrays are float32.
    """

    speech: np.ndarray  # [lead + segment]: the clean segment after ``lead`` samples of context
    lead: int  # samples of context before the segment (reverberation tail into its start)
    rir: np.ndarray | None  # [taps], None: not reverberated
    noise: np.ndarray  # [segment]: joined noise files (speed and per-file gains applied)
    overlay: np.ndarray | None  # [segment]: the second noise track, None: no overlay
    overlay_db: float | None  # its level relative to ``noise``, dB
    snr_db: float
    level_dbfs: float
    clean_eq: tuple[np.ndarray, np.ndarray] | None  # (b, a) of the speech's colouring
    noise_eq: tuple[np.ndarray, np.ndarray] | None  # (b, a) of the noise's colouring


def early_rir_taps(rir: np.ndarray, sample_rate: int) -> int:
    """Taps of ``rir`` kept by ``reverb_target=early``: up to ``EARLY_REFLECTIONS_SECONDS`` after its peak."""
    return int(np.argmax(np.abs(rir))) + int(EARLY_REFLECTIONS_SECONDS * sample_rate) + 1


def reverberate(
    speech: np.ndarray, rir: np.ndarray | None, lead: int, seg: int, early_taps: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(target, reverberant speech)`` of ``seg`` samples; the same array when the target is the
    reverberant speech itself (no RIR, or ``early_taps`` None: ``reverb_target=reverberant``)."""
    if rir is None:
        target = speech[lead : lead + seg]
        return target, target
    target_rir = rir if early_taps is None else rir[:early_taps]
    target = fftconvolve(speech, target_rir)[lead : lead + seg]
    reverberant = target if target_rir is rir else fftconvolve(speech, rir)[lead : lead + seg]
    return target, reverberant


def mix_components(c: Components, mixing: MixingConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, target)`` float32 ``[segment]`` of one example, on the CPU.

    The order is the rule: reverberation, the speech's colouring (of the segment, from rest: a
    filter is linear and time-invariant, so colouring the reverberant target equals colouring the
    dry speech before the room), the overlay, the noise's colouring, then SNR, level and peak limit.
    """
    seg = c.noise.shape[0]
    early = (
        early_rir_taps(c.rir, mixing.sample_rate)
        if c.rir is not None and mixing.reverb_target == "early"
        else None
    )
    target, reverberant = reverberate(c.speech, c.rir, c.lead, seg, early)
    if c.clean_eq is not None:
        coloured = lfilter(*c.clean_eq, target).astype(np.float32)
        if reverberant is not target:
            reverberant = lfilter(*c.clean_eq, reverberant).astype(np.float32)
        else:
            reverberant = coloured
        target = coloured
    noise = c.noise
    if c.overlay is not None:
        noise = overlay_noise(noise, c.overlay, c.overlay_db)
    if c.noise_eq is not None:
        noise = lfilter(*c.noise_eq, noise).astype(np.float32)
    peak_limit = mixing.peak_limit
    if target is reverberant:
        return mix_at_snr(target, noise, c.snr_db, c.level_dbfs, peak_limit)
    # an early-reflection target is scaled as the mixed (reverberant) speech was
    noisy, scaled = mix_at_snr(reverberant, noise, c.snr_db, c.level_dbfs, peak_limit)
    power = float(np.mean(np.square(reverberant, dtype=np.float64)))
    gain = (
        math.sqrt(float(np.mean(np.square(scaled, dtype=np.float64))) / power) if power > 0 else 0.0
    )
    return noisy, (target * gain).astype(np.float32)


def group_noise_files(
    noise: Sequence[AudioEntry], mixing: MixingConfig
) -> tuple[list[list[AudioEntry]], np.ndarray | None]:
    """The lists a noise file is drawn from, and each list's probability (None: uniform).

    ``noise_balance=file``: one list of every file. ``folder``: one list per folder, weighted by
    ``noise_folder_weights`` (folders with weight 0 left out). FsnetError when a weight names no
    folder or several, or leaves none.
    """
    if mixing.noise_balance != "folder":
        return [list(noise)], None
    folders: dict[str, list[AudioEntry]] = {}
    for entry in noise:
        folders.setdefault(os.path.dirname(entry.path), []).append(entry)
    dirs = sorted(folders)
    weights = mixing.noise_folder_weights
    by_name: dict[str, list[str]] = {}
    for d in dirs:
        by_name.setdefault(os.path.basename(d), []).append(d)
    unknown = sorted(set(weights) - set(by_name))
    if unknown:
        raise FsnetError(
            f"data.mixing.noise_folder_weights names no noise folder: {', '.join(unknown)}"
            f" (noise folders: {', '.join(sorted(by_name))})"
        )
    ambiguous = sorted(name for name in weights if len(by_name[name]) > 1)
    if ambiguous:
        raise FsnetError(
            f"data.mixing.noise_folder_weights: {', '.join(ambiguous)} names several noise folders"
            f" ({', '.join(d for name in ambiguous for d in by_name[name])}); rename one"
        )
    kept = [(d, weights.get(os.path.basename(d), 1.0)) for d in dirs]
    kept = [(d, w) for d, w in kept if w > 0]
    if not kept:
        raise FsnetError("data.mixing.noise_folder_weights leaves no noise folder with weight > 0")
    groups = [folders[d] for d, _ in kept]
    if len({w for _, w in kept}) == 1:
        return groups, None  # equal weights draw exactly as no weights
    total = sum(w for _, w in kept)
    return groups, np.array([w / total for _, w in kept])
