"""Metrics: ceilings on identical signals, SI-SDR by hand, graceful NaNs, DNSMOS range."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from fsnet import metrics

SR = 16000
ASSET = Path(__file__).parent / "assets" / "clean_speech.wav"


def speech_like(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A voiced, formant-shaped, syllable-modulated harmonic signal (peak 0.5), float32.

    Not speech, but enough like it for PESQ's voice-activity detector, STOI's silent-frame
    removal and DNSMOS to treat it as such.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 125.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = np.array([600.0, 1400.0, 2600.0]) * rng.uniform(0.9, 1.1, 3)
    y = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        gain = sum(np.exp(-0.5 * ((fk - fm) / 180.0) ** 2) for fm in formants) + 0.05
        gain = np.where(fk < 7000, gain, 0.0) / np.sqrt(k)
        y += gain * np.sin(k * phase)
    syll = np.clip(np.sin(2 * np.pi * 3.3 * t + rng.uniform(0, 6.28)), 0, None) ** 0.6
    y *= syll
    y += 0.002 * rng.standard_normal(n)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def load_speech(seconds: float = 3.0) -> np.ndarray:
    """The committed speech asset if the repo has one, else a synthetic speech-like signal."""
    if ASSET.exists():
        import soundfile as sf

        x, sr = sf.read(str(ASSET), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr == SR and x.shape[0] >= SR:
            return x[: int(seconds * SR)]
    return speech_like(seconds)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_speech(3.0)


def test_identical_signal_hits_ceilings(speech):
    assert metrics.pesq_wb(speech, speech) == pytest.approx(4.644, abs=0.01)
    assert metrics.pesq_nb(speech, speech) == pytest.approx(4.549, abs=0.01)
    assert metrics.stoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    assert metrics.estoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    assert metrics.si_sdr(speech, speech) == metrics.SI_SDR_MAX_DB


def test_si_sdr_hand_computed():
    # s and e are sinusoids with whole numbers of periods: zero-mean and orthogonal, so
    # alpha = 1 and SI-SDR = 10 log10(|s|^2 / |e|^2) = 10 log10(1 / c^2) = -20 log10(c).
    n = 16000
    t = np.arange(n)
    s = np.sin(2 * np.pi * 50 * t / n)
    e = np.sin(2 * np.pi * 173 * t / n)
    for c, expected in [(0.1, 20.0), (1.0, 0.0), (0.5, 6.0206), (3.0, -9.5424)]:
        assert metrics.si_sdr(s, s + c * e) == pytest.approx(expected, abs=1e-3)
    # A scaled target: alpha = 0.5, target 0.5 s, distortion 0.1 e -> 20 log10(0.5 / 0.1).
    assert metrics.si_sdr(s, 0.5 * s + 0.1 * e) == pytest.approx(20 * math.log10(5), abs=1e-3)
    # A DC offset changes nothing (both signals are made zero-mean).
    assert metrics.si_sdr(s + 3.0, s + 0.1 * e - 2.0) == pytest.approx(20.0, abs=1e-3)


def test_si_sdr_scale_invariant_and_delay_sensitive(speech):
    rng = np.random.default_rng(1)
    noisy = speech + 0.02 * rng.standard_normal(speech.shape).astype(np.float32)
    base = metrics.si_sdr(speech, noisy)
    assert 5.0 < base < 30.0
    for scale in (0.01, 0.3, 7.0, 2.0):
        assert metrics.si_sdr(speech, scale * noisy) == pytest.approx(base, abs=1e-6)
    delayed = np.concatenate([np.zeros(40, np.float32), noisy[:-40]])
    assert metrics.si_sdr(speech, delayed) < base - 3.0


def test_noisy_is_worse_than_clean(speech):
    rng = np.random.default_rng(2)
    noisy = speech + 0.1 * rng.standard_normal(speech.shape).astype(np.float32)
    got = metrics.compute_metrics(noisy, speech, ["pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr"])
    assert list(got) == ["pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr"]
    assert 1.0 <= got["pesq_wb"] < 4.0
    assert 1.0 <= got["pesq_nb"] < 4.4
    assert 0.0 < got["estoi"] < got["stoi"] < 1.0


def test_too_short_and_silent_give_nan_with_warning():
    short = speech_like(0.1)
    with pytest.warns(metrics.MetricWarning, match="at least 0.25 s"):
        assert math.isnan(metrics.pesq_wb(short, short))
    silent = np.zeros(SR, np.float32)
    with pytest.warns(metrics.MetricWarning, match="silent"):
        assert math.isnan(metrics.pesq_nb(silent, silent))
    with pytest.warns(metrics.MetricWarning, match="silent"):
        assert math.isnan(metrics.si_sdr(silent, silent))
    with pytest.warns(metrics.MetricWarning, match="30 frames"):
        assert math.isnan(metrics.stoi(short, short))
    # Tiny level but no detectable utterance: the pesq library's NoUtterancesError -> NaN.
    quiet = np.zeros(SR, np.float32)
    quiet[100] = 1e-3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metrics.pesq_wb(quiet, quiet)
    assert math.isnan(value) or 1.0 <= value <= 4.65
    if math.isnan(value):
        assert any(issubclass(w.category, metrics.MetricWarning) for w in caught)
    bad = speech_like(1.0)
    bad[10] = np.nan
    with pytest.warns(metrics.MetricWarning, match="non-finite"):
        assert math.isnan(metrics.stoi(speech_like(1.0), bad))
    with pytest.warns(metrics.MetricWarning, match="non-finite"):
        assert all(math.isnan(v) for v in metrics.dnsmos(bad).values())


def test_stoi_silent_or_speechless_reference_is_nan_with_warning():
    # A silent reference has no speech to be intelligible: pystoi scores it about 0 (STOI 0.000,
    # ESTOI 0.015) without a word, which would drag the means down; NaN + warning instead.
    degraded = speech_like(2.0)
    for silent in (np.zeros(2 * SR, np.float32), np.full(2 * SR, 0.1, np.float32)):
        for fn in (metrics.stoi, metrics.estoi):
            with pytest.warns(metrics.MetricWarning, match="reference is silent"):
                assert math.isnan(fn(silent, degraded))
    with pytest.warns(metrics.MetricWarning, match="reference is silent"):
        got = metrics.compute_metrics(degraded, np.zeros(2 * SR), ["stoi", "estoi"])
    assert all(math.isnan(v) for v in got.values())
    # Long enough, but pystoi's silent-frame removal leaves fewer than 30 frames (it warns and
    # returns 1e-5): NaN with our warning.
    burst = np.zeros(2 * SR, np.float32)
    burst[SR : SR + 2000] = degraded[SR : SR + 2000]
    for fn in (metrics.stoi, metrics.estoi):
        with pytest.warns(metrics.MetricWarning, match="too little non-silent speech"):
            assert math.isnan(fn(burst, degraded))
    # Shorter than a single pystoi frame (pystoi itself raises): NaN, never an exception.
    for n in (0, 10, 300):
        tiny = degraded[:n]
        with pytest.warns(metrics.MetricWarning, match="too short"):
            assert math.isnan(metrics.stoi(tiny, tiny))


def test_metric_names():
    assert metrics.expand_metric_names(["dnsmos", "si_sdr"]) == ("si_sdr",) + metrics.DNSMOS_METRICS
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.expand_metric_names(["pesq"])
    with pytest.raises(ValueError, match="lengths differ"):
        metrics.compute_metrics(np.zeros(10), np.zeros(11), ["si_sdr"])


def test_dnsmos_range_and_noise_hurts_background(speech):
    # 2.3 s clips are tiled by speechmos to 9.2 s: a single DNSMOS window, so this stays fast.
    clean = speech[: int(2.3 * SR)]
    rng = np.random.default_rng(3)
    noisy = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    s_clean = metrics.dnsmos(clean)
    s_noisy = metrics.dnsmos(noisy)
    for scores in (s_clean, s_noisy):
        assert set(scores) == set(metrics.DNSMOS_METRICS)
        for value in scores.values():
            assert 1.0 <= value <= 5.0
    assert s_noisy["dnsmos_bak"] < s_clean["dnsmos_bak"]
    # Out-of-range samples are clipped rather than rejected; no reference -> DNSMOS only.
    loud = metrics.compute_metrics(4.0 * clean, None)
    assert list(loud) == list(metrics.DNSMOS_METRICS)
