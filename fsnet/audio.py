"""Reading and writing audio files (soundfile), with the checks every entry point needs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from fsnet.checkpoint import atomic_write
from fsnet.errors import FsnetError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus")


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of ``x [..., N]`` (torchaudio's windowed sinc)."""
    if from_rate == to_rate:
        return x
    y = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), from_rate, to_rate
    )
    return y.numpy()


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> tuple[np.ndarray, list[str]]:
    """Read a file as mono float32 ``[N]`` at ``sample_rate`` Hz.

    Multichannel input is averaged and other rates are resampled, each with a notice in the
    returned list. Missing, unreadable, empty or non-finite files raise ``FsnetError``.
    """
    path = Path(path)
    if not path.exists():
        raise FsnetError(f"no such file: {path}")
    if path.is_dir():
        raise FsnetError(f"{path} is a directory, expected an audio file")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise FsnetError(
            f"cannot read audio file {path}: {str(exc).strip() or type(exc).__name__}"
        ) from None
    notices = []
    if data.shape[0] == 0:
        raise FsnetError(f"{path} contains no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise FsnetError(f"{path} contains {bad} NaN/Inf samples; refusing to process it")
    if data.shape[1] > 1:
        notices.append(f"{path.name}: {data.shape[1]} channels averaged to mono")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if file_rate != sample_rate:
        notices.append(f"{path.name}: resampled from {file_rate} Hz to {sample_rate} Hz")
        x = resample(x, file_rate, sample_rate)
    if np.abs(x).max() >= 0.999:
        notices.append(f"{path.name}: reaches full scale (clipped input); results may suffer")
    return np.ascontiguousarray(x, dtype=np.float32), notices


def write_audio(
    path: str | os.PathLike, x: np.ndarray, sample_rate: int = 16000, subtype: str | None = None
) -> Path:
    """Write mono ``x [N]`` atomically (temp file + rename); format from the extension.

    WAV defaults to 16-bit PCM; values are clipped to [-1, 1] first so integers never wrap.
    """
    path = Path(path)
    ext = path.suffix.lower()
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
    if ext not in formats:
        raise FsnetError(f"cannot write {path}: use a .wav, .flac or .ogg name")
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[formats[ext]]
    x = np.asarray(x, dtype=np.float32)
    if subtype != "FLOAT":
        x = np.clip(x, -1.0, 1.0)
    with atomic_write(path) as tmp:
        sf.write(tmp, x, sample_rate, subtype=subtype, format=formats[ext])
    return path
