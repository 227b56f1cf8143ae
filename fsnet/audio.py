"""Reading and writing audio files (soundfile), with the checks every entry point needs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from fsnet.errors import FsnetError
from fsnet.files import atomic_write

SAMPLE_RATE = 16000  # Hz; the rate the model, the metrics and every enhanced file use
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus")

# DNS-Challenge naming: ``noisy_snr5_fileid_12.wav`` pairs with ``clean_fileid_12.wav``.
_FILEID_AT_END = re.compile(r"fileid_(\d+)$")


def fileid(path: str | os.PathLike) -> int | None:
    """The N of a file name whose stem ends in ``fileid_N``, else None.

    The one pairing rule for noisy/clean files: training's validation sets, evaluation's test sets
    and the corpus recipes all pair through it, so a folder pairs the same way everywhere.
    """
    match = _FILEID_AT_END.search(Path(path).stem)
    return int(match.group(1)) if match else None


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of ``x [..., N]`` (torchaudio's windowed sinc)."""
    if from_rate == to_rate:
        return x
    y = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), from_rate, to_rate
    )
    return y.numpy()


def load_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, list[str]]:
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


OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates libsndfile's Opus encoder takes


def output_format(
    path: str | os.PathLike, subtype: str | None = None, sample_rate: int = SAMPLE_RATE
) -> tuple[str, str]:
    """The soundfile ``(format, subtype)`` to write ``path`` with; ``FsnetError`` if none fits.

    The container comes from the extension (any libsndfile format; ``.oga`` and ``.opus`` are
    Ogg, ``.opus`` with the Opus codec). Without ``subtype``: 16-bit PCM where the format takes
    it, else the format's own default (Vorbis for ``.ogg``).
    """
    ext = Path(path).suffix.lower()
    fmt = {".oga": "OGG", ".opus": "OGG"}.get(ext, ext.lstrip(".").upper())
    if not fmt or fmt not in sf.available_formats():
        raise FsnetError(
            f"cannot write {path}: unknown audio file extension (use .wav, .flac, .ogg, .opus, ...)"
        )
    if ext == ".opus":
        if "OPUS" not in sf.available_subtypes("OGG"):
            raise FsnetError(
                f"cannot write {path}: this libsndfile ({sf.__libsndfile_version__}) has no Opus "
                "encoder; use .ogg or .flac"
            )
        if subtype not in (None, "OPUS"):
            raise FsnetError(f"cannot write {path}: a .opus file holds OPUS audio, not {subtype}")
        subtype = "OPUS"
    if subtype is None:
        subtype = "PCM_16" if sf.check_format(fmt, "PCM_16") else sf.default_subtype(fmt)
    if not subtype or not sf.check_format(fmt, subtype):
        raise FsnetError(f"cannot write {path}: subtype {subtype} is not valid for {fmt} files")
    if subtype == "OPUS" and sample_rate not in OPUS_RATES:
        raise FsnetError(
            f"cannot write {path}: Opus takes 8, 12, 16, 24 or 48 kHz audio, not {sample_rate} Hz"
        )
    return fmt, subtype


def write_audio(
    path: str | os.PathLike,
    x: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    subtype: str | None = None,
) -> Path:
    """Write mono ``x [N]`` atomically (temp file + rename); format from the extension.

    The default subtype suits the container (see :func:`output_format`: 16-bit PCM for WAV and
    FLAC, Vorbis for .ogg, Opus for .opus); values are clipped to [-1, 1] first so integers
    never wrap.
    """
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise FsnetError(f"cannot write {path}: use a .wav, .flac, .ogg or .opus name")
    fmt, subtype = output_format(path, subtype, sample_rate)
    x = np.asarray(x, dtype=np.float32)
    if subtype != "FLOAT":
        x = np.clip(x, -1.0, 1.0)
    with atomic_write(path) as tmp:
        sf.write(tmp, x, sample_rate, subtype=subtype, format=fmt)
    return path
