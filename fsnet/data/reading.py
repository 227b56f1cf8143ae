"""Reading training material: a segment of a long file without decoding the rest, at the model rate.

Segments are read with soundfile's ``start``/``frames``; files at another rate are resampled with
a margin of real context either side, so a segment cut from a resampled file matches the same
stretch of the whole file resampled.
"""

from __future__ import annotations

import math

import numpy as np
import soundfile as sf

from fsnet.data.corpus import AudioEntry


def _resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``x [N]`` at ``from_rate`` -> float32 ``[M]`` at ``to_rate`` (fsnet.audio.resample)."""
    from fsnet.audio import resample

    return np.asarray(
        resample(np.ascontiguousarray(x, dtype=np.float32), from_rate, to_rate), dtype=np.float32
    )


def read_frames(entry: AudioEntry, start: int, frames: int) -> np.ndarray:
    """``[frames, channels]`` float32 read from file position ``start`` (file rate); may be shorter."""
    data, _ = sf.read(entry.path, start=start, frames=frames, dtype="float32", always_2d=True)
    if not np.isfinite(data).all():
        raise ValueError("contains NaN/Inf samples")
    return data


def read_segment(entry: AudioEntry, start: int, length: int, sample_rate: int) -> np.ndarray:
    """Mono ``[length]`` at ``sample_rate`` starting at ``start`` (at ``sample_rate``); zero-padded past the end."""
    if entry.sample_rate == sample_rate:
        data = read_frames(entry, start, length)
    else:
        ratio = entry.sample_rate / sample_rate
        margin = 64  # file samples either side so the resampling filter sees real context
        first = int(math.floor(start * ratio))
        lead = min(first, margin)
        count = int(math.ceil(length * ratio)) + lead + margin
        data = read_frames(entry, first - lead, count)
        data = _resample(data.T, entry.sample_rate, sample_rate).T
        skip = int(round(lead / ratio))
        data = data[skip : skip + length]
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if mono.shape[0] < length:
        mono = np.pad(mono, (0, length - mono.shape[0]))
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_whole(path: str, sample_rate: int) -> np.ndarray:
    """A whole file as mono float32 ``[N]`` at ``sample_rate`` (fsnet.audio.load_audio; FsnetError
    on failure)."""
    from fsnet.audio import load_audio

    x, _notices = load_audio(path, sample_rate)
    return x
