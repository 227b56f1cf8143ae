"""Shared test fixtures: a tiny model config and a generator of small fake DNS-layout corpora."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000

# A few thousand parameters: fast enough for CPU training tests, same front end as the real model.
TINY_MODEL_CONFIG = {
    "num_mels": 16,
    "encoder_hidden_sizes": [32, 24],
    "bottleneck_hidden_size": 24,
    "bottleneck_num_layers": 1,
    "decoder_hidden_sizes": [32, 32],
    "noisy_num_neighbors": 2,
}


@pytest.fixture
def tiny_model_config() -> dict:
    """``ModelConfig`` overrides of a tiny Fast FullSubNet (n_fft 512, hop 256 as the real one)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in TINY_MODEL_CONFIG.items()}


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


# ------------------------------------------------------------------------------ synthetic audio
def speech_like(
    rng: np.random.Generator, seconds: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Voiced "syllables": a gliding harmonic tone with a 3-5 Hz on/off envelope, about -25 dBFS."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    rate = rng.uniform(3, 5)
    envelope = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 0.5
    x = voice * envelope
    return (0.056 * x / (np.sqrt(np.mean(x**2)) + 1e-9)).astype(np.float32)


def noise_like(
    rng: np.random.Generator, seconds: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Coloured noise with a slowly varying level, about -30 dBFS."""
    n = int(round(seconds * sample_rate))
    white = rng.standard_normal(n)
    coloured = np.convolve(white, np.ones(4) / 4, mode="same")
    coloured *= 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * np.arange(n) / sample_rate)
    return (0.03 * coloured / (np.sqrt(np.mean(coloured**2)) + 1e-9)).astype(np.float32)


def rir_like(
    rng: np.random.Generator, seconds: float = 0.2, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Direct path after a short delay, then exponentially decaying noise (RT60 about 0.3 s)."""
    n = int(round(seconds * sample_rate))
    delay = int(rng.integers(10, 80))
    h = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / (0.3 * sample_rate)) * 0.3
    h[:delay] = 0
    h[delay] = 1.0
    return (h / np.max(np.abs(h))).astype(np.float32)


def stream_in_chunks(model, x: np.ndarray, chunk_sizes, shaping=None) -> tuple[np.ndarray, int]:
    """A streaming engine over ``x`` in the given chunk sizes (cycled), then its flush; returns
    (output, latency in samples): ``output[latency:]`` lines up with ``x``."""
    import fsnet

    engine = fsnet.StreamingEnhancer(model, shaping=shaping)
    outs, i, k = [], 0, 0
    while i < len(x):
        n = chunk_sizes[k % len(chunk_sizes)]
        outs.append(engine.process(x[i : i + n]))
        i += n
        k += 1
    outs.append(engine.flush())
    return np.concatenate(outs), engine.latency_samples


def write(path: Path, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    if ext == ".ogg":
        sf.write(path, x, sample_rate, format="OGG", subtype="VORBIS")
    elif ext == ".flac":
        sf.write(path, x, sample_rate, format="FLAC", subtype="PCM_16")
    else:
        sf.write(path, x, sample_rate, subtype="FLOAT")
    return path


def make_fake_dns_tree(
    root: Path,
    *,
    n_clean: int = 4,
    clean_seconds: float = 2.0,
    n_noise: int = 3,
    noise_seconds: float = 1.5,
    n_rir: int = 2,
    n_val: int = 2,
    val_seconds: float = 1.5,
    ext: str = "wav",
    noise_ext: str | None = None,
    sample_rate: int = SAMPLE_RATE,
    rir_root: Path | None = None,
    subsets: tuple[str, ...] = ("no_reverb", "with_reverb"),
    seed: int = 0,
) -> SimpleNamespace:
    """Write a small DNS-layout corpus under ``root``; RIRs go to ``rir_root`` (default ``<root>/rir``).

    Training files use ``ext`` (wav/flac/ogg) at ``sample_rate``; the validation set is always
    16 kHz WAV named like the DNS synthetic test set (``clean_fileid_N.wav``, ``..._fileid_N.wav``).
    ``n_rir=0`` writes no RIR folder.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    noise_ext = noise_ext or ext
    for i in range(n_clean):
        write(
            root / "clean" / f"spk{i % 2}" / f"book_{i:05d}.{ext}",
            speech_like(rng, clean_seconds, sample_rate),
            sample_rate,
        )
    for i in range(n_noise):
        write(
            root / "noise" / f"noise_{i:03d}.{noise_ext}",
            noise_like(rng, noise_seconds, sample_rate),
            sample_rate,
        )
    rirs = []
    if n_rir:
        rir_root = Path(rir_root) if rir_root is not None else root / "rir"
        for i in range(n_rir):
            h = rir_like(rng, 0.2, sample_rate)
            rirs.append(h)
            write(rir_root / f"rir_{i:03d}.{ext}", h, sample_rate)
    else:
        rir_root = None
    fileid = 0
    for subset in subsets:
        base = root / "test_set" / "synthetic" / subset
        for _ in range(n_val):
            clean = speech_like(rng, val_seconds)
            if subset == "with_reverb" and rirs:
                clean = np.convolve(clean, rirs[fileid % len(rirs)])[: clean.shape[0]].astype(
                    np.float32
                )
            noise = noise_like(rng, val_seconds)
            gain = math.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (5 / 10)))
            noisy = clean + gain * noise
            write(base / "clean" / f"clean_fileid_{fileid}.wav", clean)
            write(base / "noisy" / f"book_{fileid:05d}_snr5_tl-25_fileid_{fileid}.wav", noisy)
            fileid += 1
    return SimpleNamespace(root=root, rir_root=rir_root)


@pytest.fixture
def fake_dns_tree(tmp_path_factory):
    """Factory: ``fake_dns_tree(**options) -> SimpleNamespace(root, rir_root)`` in a fresh tmp dir."""

    def factory(root: Path | None = None, **options) -> SimpleNamespace:
        root = Path(root) if root is not None else tmp_path_factory.mktemp("dns")
        return make_fake_dns_tree(root, **options)

    return factory


@pytest.fixture
def run_cli():
    """``run_cli(args, cwd=repo, timeout=300, env=None)``: run ``python <args>``, return the CompletedProcess."""
    import subprocess

    def run(args: list[str], cwd: Path = REPO_ROOT, timeout: float = 300, env: dict | None = None):
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("HYDRA_FULL_ERROR", None)
        return subprocess.run(
            [sys.executable, *[str(a) for a in args]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )

    return run
