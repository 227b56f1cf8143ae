"""Reading and writing audio files (soundfile), with the checks every entry point needs."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from fsnet.errors import FsnetError, check_finite_output
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
    """Band-limited resampling of ``x [..., N]`` to float32 ``[..., ceil(N * to_rate / from_rate)]``.

    soxr (very high quality, delay compensated): its cost follows the signal length whatever the
    two rates are. A windowed sinc over the exact rational ratio (torchaudio's) builds a kernel of
    about ``(to_rate / gcd) * (from_rate / gcd)`` taps: 44,101 Hz -> 16 kHz needed 12 GB for 2 s.
    """
    x = np.asarray(x, dtype=np.float32)
    if from_rate == to_rate:
        return x
    length = x.shape[-1]
    wanted = math.ceil(length * to_rate / from_rate)
    if length == 0:
        return np.zeros((*x.shape[:-1], 0), dtype=np.float32)
    frames = np.ascontiguousarray(x.reshape(-1, length).T)  # soxr takes [N, channels]
    y = soxr.resample(frames, from_rate, to_rate, quality="VHQ")
    y = y[:wanted] if y.shape[0] >= wanted else np.pad(y, ((0, wanted - y.shape[0]), (0, 0)))
    return np.ascontiguousarray(y.T.reshape(*x.shape[:-1], wanted), dtype=np.float32)


# Integer sample types -> (full scale, centre): what a WAV of that width holds.
_INTEGER_SCALES = {
    "int8": (2**7, 0),
    "int16": (2**15, 0),
    "int32": (2**31, 0),
    "uint8": (2**7, 128),
}


def as_float_samples(x: Any) -> np.ndarray | torch.Tensor:
    """Samples as float32 on the [-1, 1] scale: numpy in, numpy out; a tensor stays a tensor.

    Integer samples (what ``scipy.io.wavfile.read`` returns) are divided by their type's full
    scale: int16 by 32768, int32 by 2**31, int8 by 128; uint8 (8-bit WAV) is centred on 128
    first. Float samples are kept as they are. Anything else (None, text, bool, complex, other
    integer types, whose full scale no WAV defines) raises TypeError.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"expected a numpy array or tensor of samples, got {type(x).__name__}")
    is_tensor = isinstance(x, torch.Tensor)
    dtype = str(x.dtype).removeprefix("torch.") if is_tensor else str(np.asarray(x).dtype)
    if dtype.startswith(("float", "bfloat")):
        return x.float() if is_tensor else np.asarray(x).astype(np.float32, copy=False)
    if dtype not in _INTEGER_SCALES:
        raise TypeError(
            f"expected float or int8/int16/int32/uint8 samples, got {dtype} (give float samples "
            "on the [-1, 1] scale)"
        )
    full, centre = _INTEGER_SCALES[dtype]
    if is_tensor:
        return ((x.double() - centre) / full).float()
    return ((np.asarray(x, dtype=np.float64) - centre) / full).astype(np.float32)


def _truncation_notice(path: Path, info: Any) -> str | None:
    """A notice when the header promises more audio than the file holds (an interrupted copy).

    libsndfile reads what is there and notes ``data : <header bytes> (should be <bytes there>)``
    in its log; the frames it returns are the ones present.
    """
    match = re.search(r"^(?:data|SSND)\s*:\s*(\d+) \(should be (\d+)\)", info.extra_info, re.M)
    if not match or int(match.group(1)) <= int(match.group(2)):
        return None
    align = re.search(r"Block Align\s*:\s*(\d+)", info.extra_info)
    promised = (
        f"{int(match.group(1)) / int(align.group(1)) / info.samplerate:.2f} s"
        if align and int(align.group(1)) > 0
        else f"{int(match.group(1))} bytes"
    )
    return (
        f"{path.name}: truncated: its header promises {promised}, the file holds "
        f"{info.duration:.2f} s (an interrupted copy?); only that part is used"
    )


def load_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, list[str]]:
    """Read a file as mono float32 ``[N]`` at ``sample_rate`` Hz.

    Multichannel input is averaged and other rates are resampled, each with a notice in the
    returned list; so are a truncated file (read as far as it goes) and float samples beyond
    full scale. Missing, unreadable, empty or non-finite files raise ``FsnetError``.
    """
    path = Path(path)
    if not path.exists():
        raise FsnetError(f"no such file: {path}")
    if path.is_dir():
        raise FsnetError(f"{path} is a directory, expected an audio file")
    try:
        info = sf.info(path)
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise FsnetError(
            f"cannot read audio file {path}: {str(exc).strip() or type(exc).__name__}"
        ) from None
    notices = [n for n in [_truncation_notice(path, info)] if n]
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
    peak = float(np.abs(x).max())
    if peak > 1.001:  # float files only; a hair above 1.0 is full scale, not a level problem
        notices.append(
            f"{path.name}: peaks at {peak:.4g}, above full scale (1.0); the enhanced signal "
            "keeps that level, so a 16/24-bit output clips unless the input is scaled down "
            "(or the output written as FLOAT)"
        )
    elif peak >= 0.999:
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


FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # subtypes that hold samples beyond [-1, 1]


class ClipCounter:
    """Clips samples to [-1, 1] for a subtype that cannot hold more, and counts what it clipped.

    Call it on each piece written; :meth:`notice` then says how much of the file clipped. Integer
    subtypes would otherwise wrap (+1.5 written as -0.5), and lossy codecs decode clipped anyway.
    """

    def __init__(self, subtype: str) -> None:
        self.clips = subtype not in FLOAT_SUBTYPES
        self.clipped = 0  # samples beyond full scale so far
        self.total = 0  # samples so far

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        self.total += x.size
        if self.clips:
            over = np.abs(x) > 1.0
            count = int(over.sum())
            if count:
                self.clipped += count
                x = np.clip(x, -1.0, 1.0)
        return x

    def notice(self, name: str) -> str | None:
        """One line about the clipped samples, or None if none were."""
        if not self.clipped:
            return None
        share = 100.0 * self.clipped / max(self.total, 1)
        return (
            f"{name}: {self.clipped} of {self.total} samples ({share:.2g}%) were beyond full "
            "scale and clipped; scale the input down or write a FLOAT file"
        )


class ClippedOutputWarning(UserWarning):
    """:func:`write_audio` clipped samples that the file's subtype cannot hold."""


def write_audio(
    path: str | os.PathLike,
    x: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    subtype: str | None = None,
) -> Path:
    """Write mono ``x [N]`` atomically (temp file + rename); format from the extension.

    The default subtype suits the container (see :func:`output_format`: 16-bit PCM for WAV and
    FLAC, Vorbis for .ogg, Opus for .opus). Except for FLOAT/DOUBLE files, values are clipped to
    [-1, 1] first so integers never wrap, with a :class:`ClippedOutputWarning` giving the count.
    NaN/Inf samples raise ``FsnetError`` (a 16-bit file would hold full-scale noise).
    """
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise FsnetError(f"cannot write {path}: use a .wav, .flac, .ogg or .opus name")
    fmt, subtype = output_format(path, subtype, sample_rate)
    check_finite_output(x, str(path))
    clip = ClipCounter(subtype)
    x = clip(x)
    with atomic_write(path) as tmp:
        sf.write(tmp, x, sample_rate, subtype=subtype, format=fmt)
    notice = clip.notice(path.name)
    if notice:
        warnings.warn(notice, ClippedOutputWarning, stacklevel=2)
    return path
