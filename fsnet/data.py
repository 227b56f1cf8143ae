"""Training data: DNS-Challenge-style corpus trees, on-the-fly mixing and the Lightning data module.

Corpus layout (DNS Challenge, Interspeech 2020; the ``debian_audio`` corpus uses the same one)::

    <root>/clean/**/*.{wav,flac,ogg}                               training speech
    <root>/noise/**/*.{wav,flac,ogg}                               training noise
    <root>/test_set/synthetic/{no_reverb,with_reverb}/clean/*      validation references
    <root>/test_set/synthetic/{no_reverb,with_reverb}/noisy/*      validation inputs
    <rir_root>/**/*.{wav,flac,ogg}                                 room impulse responses (optional)

Validation pairs match by the ``fileid_N`` part of their names (``clean_fileid_7.wav`` pairs with
``..._fileid_7.wav`` of the same subset).

Training examples are mixed on the fly, as in FullSubNet: a random 3.072 s segment of a random
clean file, noise made of random noise files joined by 0.2 s silences, SNR uniform in [-5, 20] dB,
reverberation with probability 0.75 (the clean segment convolved with a random RIR; the *reverberant*
clean is the training target, as in the original recipe, so the network removes noise but not
reverberation; ``reverb_target: early`` keeps only the direct path and 50 ms of early reflections
in the target instead), mixture level -25 dBFS +- 10 dB, and both signals scaled down together if
either would exceed 0.999. Optionally (off by default; the small ``debian_audio`` recipe turns it on)
the speech and/or the noise is played faster or slower by a random factor, which moves pitch and
formants: more voices and sounds from a corpus of few speakers; and the speech and/or the noise
is coloured by a random second-order filter (RNNoise's augmentation: new microphones and rooms for
the same recordings; the target keeps the speech's colouring, so the network learns to leave it
alone); and the noise gets busier: a random gain per joined noise file and, sometimes, a second
noise track laid over the first. Every random choice of example ``index`` in epoch ``epoch`` comes from
``numpy.random.default_rng([seed, epoch, index])``: indices are unique across DataLoader workers
and DDP ranks, so workers draw different examples, and the data do not depend on the number of
workers.

Nothing here reads a whole long file for a 3 s segment: the scan caches every file's length and
sample rate in text lists, and segments are read with soundfile's ``start``/``frames``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from scipy.signal import fftconvolve, lfilter, resample_poly
from torch.utils.data import DataLoader, Dataset

from fsnet.audio import AUDIO_EXTENSIONS  # the formats load_audio reads
from fsnet.errors import FsnetError

try:  # the Lightning package name changed over time; pyproject pins pytorch-lightning
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl  # type: ignore[no-redef]

log = logging.getLogger(__name__)

LIST_FORMAT = "fsnet-filelist v1"
VAL_SUBSETS = ("no_reverb", "with_reverb")
FILEID_RE = re.compile(r"fileid_(\d+)")
SILENT_RMS = 1e-4  # -80 dBFS: a clean segment quieter than this is drawn again
MAX_ATTEMPTS = 20  # draws of a file before giving up on unreadable / silent material
RIR_CACHE_SIZE = 256  # RIRs kept decoded per worker
EARLY_REFLECTIONS_SECONDS = 0.05  # reverb_target=early keeps the RIR up to 50 ms after its peak
# Speed factors are drawn on a grid of 1/50 (2 %): the resampling ratio is then 50 : (50 + k), whose
# small terms keep the polyphase filter short; a free real factor can make it thousands of taps.
SPEED_GRID_STEPS = 50


# ------------------------------------------------------------------------------------ file lists
@dataclass(frozen=True)
class AudioEntry:
    """One audio file of a list: absolute path, length and rate as stored in the file."""

    path: str
    frames: int  # samples per channel, at sample_rate
    sample_rate: int  # Hz
    channels: int

    def length_at(self, sample_rate: int) -> int:
        """Length in samples once resampled to ``sample_rate``."""
        if self.sample_rate == sample_rate:
            return self.frames
        return self.frames * sample_rate // self.sample_rate


@dataclass(frozen=True)
class ValPair:
    """A fixed validation example of the synthetic test set."""

    noisy: str
    clean: str
    subset: str  # no_reverb | with_reverb
    fileid: int

    @property
    def name(self) -> str:
        return f"{self.subset}/fileid_{self.fileid}"


@dataclass
class CorpusLists:
    """Everything the data module needs from a corpus tree."""

    root: Path
    rir_root: Path | None
    list_dir: Path
    clean: list[AudioEntry]
    noise: list[AudioEntry]
    rir: list[AudioEntry]
    val: list[ValPair]
    rescanned: list[str] = field(default_factory=list)  # lists written by this call

    def summary(self) -> str:
        def duration(entries: Sequence[AudioEntry]) -> str:
            seconds = sum(e.frames / e.sample_rate for e in entries)
            return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"

        rir = f"{len(self.rir)} RIRs" if self.rir_root is not None else "no RIRs"
        return (
            f"{len(self.clean)} clean files ({duration(self.clean)}), "
            f"{len(self.noise)} noise files ({duration(self.noise)}), {rir}, "
            f"{len(self.val)} validation pairs"
        )


def find_audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted, hidden folders skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return sorted(found)


def _report_bad(path: Path | str, reason: str, on_bad_file: str) -> None:
    message = f"unreadable audio file {path}: {reason}"
    if on_bad_file == "error":
        raise FsnetError(message + " (set data.on_bad_file=skip to skip such files)")
    log.warning("skipping %s", message)


def _probe(path: Path) -> AudioEntry | str:
    """File metadata, or the reason it cannot be used."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile reports corrupt files in many ways
        return " ".join(str(exc).split()) or type(exc).__name__
    if info.frames <= 0:
        return "no samples"
    return AudioEntry(str(path), int(info.frames), int(info.samplerate), int(info.channels))


def probe_files(
    paths: Sequence[Path], on_bad_file: str = "skip", threads: int = 16
) -> list[AudioEntry]:
    """``AudioEntry`` of every readable file (in order); bad ones are skipped or fatal."""
    with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(paths)))) as pool:
        results = list(pool.map(_probe, paths)) if paths else []
    entries = []
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, str):
            _report_bad(path, result, on_bad_file)
        else:
            entries.append(result)
    return entries


def default_list_dir(root: Path) -> Path:
    """``<root>/fsnet_lists`` when writable, else a per-root folder under ``~/.cache/fsnet``."""
    candidate = root / "fsnet_lists"
    if os.access(candidate if candidate.exists() else root, os.W_OK):
        return candidate
    import hashlib

    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "fsnet" / "lists" / f"{root.name}-{digest}"


def _write_lines(path: Path, header: str, lines: Iterable[str]) -> None:
    """Atomic text write (several DDP ranks may scan at once; each write is all-or-nothing)."""
    from fsnet.files import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# {header}\n")
        for line in lines:
            f.write(line + "\n")


def _read_lines(path: Path, header: str) -> list[str] | None:
    """Body lines of a list file, or None when missing or written for another root/format."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().rstrip("\n")
            if first != f"# {header}":
                return None
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return None


def _entry_list(
    kind: str, folder: Path, list_file: Path, force: bool, on_bad_file: str, rescanned: list[str]
) -> list[AudioEntry]:
    header = f"{LIST_FORMAT} kind={kind} root={folder}"
    lines = None if force else _read_lines(list_file, header)
    if lines is not None:
        entries = []
        for line in lines:
            rel, frames, rate, channels = line.rsplit("\t", 3)
            entries.append(AudioEntry(str(folder / rel), int(frames), int(rate), int(channels)))
        return entries
    entries = probe_files(find_audio_files(folder), on_bad_file)
    if entries:
        _write_lines(
            list_file,
            header,
            (
                f"{os.path.relpath(e.path, folder)}\t{e.frames}\t{e.sample_rate}\t{e.channels}"
                for e in entries
            ),
        )
        rescanned.append(kind)
    return entries


def _pair_subset(subset_dir: Path, on_bad_file: str) -> tuple[list[ValPair], list[str]]:
    """Pairs of one synthetic subset plus problems found (unpaired files)."""
    subset = subset_dir.name
    problems: list[str] = []
    clean_by_id: dict[int, Path] = {}
    for path in find_audio_files(subset_dir / "clean"):
        m = FILEID_RE.search(path.stem)
        if m:
            clean_by_id[int(m.group(1))] = path
    pairs = []
    unpaired = []
    for path in find_audio_files(subset_dir / "noisy"):
        m = FILEID_RE.search(path.stem)
        fileid = int(m.group(1)) if m else None
        if fileid is None or fileid not in clean_by_id:
            unpaired.append(path.name)
            continue
        pairs.append(ValPair(str(path), str(clean_by_id[fileid]), subset, fileid))
    if unpaired:
        problems.append(
            f"{len(unpaired)} noisy file(s) in {subset_dir}/noisy without a clean_fileid_N partner (e.g. {unpaired[0]})"
        )
    # both files of a pair must be readable
    flat = [Path(p.noisy) for p in pairs] + [Path(p.clean) for p in pairs]
    ok = {e.path for e in probe_files(flat, on_bad_file)}
    pairs = [p for p in pairs if p.noisy in ok and p.clean in ok]
    return sorted(pairs, key=lambda p: p.fileid), problems


def scan_corpus(
    root: str | os.PathLike | None,
    rir_root: str | os.PathLike | None = None,
    list_dir: str | os.PathLike | None = None,
    force: bool = False,
    on_bad_file: str = "skip",
    name: str = "dns",
    root_hint: str = "set recipe.root=<dir>",
) -> CorpusLists:
    """Scan (or read the cached lists of) a DNS-layout tree; FsnetError names whatever is missing.

    Lists are text files ``clean.txt``, ``noise.txt``, ``rir.txt``, ``val.txt`` in ``list_dir``
    (default: :func:`default_list_dir`), one file per line with its length and rate. They are
    re-scanned when missing, written for another root, or ``force`` is set.
    """
    if on_bad_file not in ("skip", "error"):
        raise FsnetError(f"data.on_bad_file must be skip or error, got {on_bad_file!r}")
    if root is None or str(root).strip() in ("", "None", "???"):
        raise FsnetError(f"no {name} data root given ({root_hint})")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FsnetError(f"{name} data root {root} does not exist or is not a folder ({root_hint})")
    missing = []
    for sub, what in (("clean", "clean speech"), ("noise", "noise")):
        if not (root / sub).is_dir():
            missing.append(f"{sub}/ ({what})")
    synthetic = root / "test_set" / "synthetic"
    subsets = [synthetic / s for s in VAL_SUBSETS if (synthetic / s).is_dir()]
    if not subsets:
        missing.append(
            "test_set/synthetic/{no_reverb,with_reverb}/{clean,noisy}/ (validation pairs)"
        )
    for subset_dir in subsets:
        for sub in ("clean", "noisy"):
            if not (subset_dir / sub).is_dir():
                missing.append(f"{subset_dir.relative_to(root)}/{sub}/")
    if rir_root is not None and str(rir_root).strip() not in ("", "None"):
        rir_root = Path(rir_root).expanduser().resolve()
        if not rir_root.is_dir():
            missing.append(
                f"RIR folder {rir_root} (set recipe.rir_root=null to train without reverberation)"
            )
    else:
        rir_root = None
    if missing:
        raise FsnetError(f"{name} data root {root} is incomplete: missing " + "; ".join(missing))

    list_dir = Path(list_dir).expanduser().resolve() if list_dir else default_list_dir(root)
    rescanned: list[str] = []
    clean = _entry_list(
        "clean", root / "clean", list_dir / "clean.txt", force, on_bad_file, rescanned
    )
    noise = _entry_list(
        "noise", root / "noise", list_dir / "noise.txt", force, on_bad_file, rescanned
    )
    rir = []
    if rir_root is not None:
        rir = _entry_list("rir", rir_root, list_dir / "rir.txt", force, on_bad_file, rescanned)

    val_header = f"{LIST_FORMAT} kind=val root={root}"
    val_lines = None if force else _read_lines(list_dir / "val.txt", val_header)
    if val_lines is not None:
        val = []
        for line in val_lines:
            noisy, clean_rel, subset, fileid = line.rsplit("\t", 3)
            val.append(ValPair(str(root / noisy), str(root / clean_rel), subset, int(fileid)))
    else:
        val = []
        for subset_dir in subsets:
            pairs, problems = _pair_subset(subset_dir, on_bad_file)
            for problem in problems:
                log.warning("%s", problem)
            val.extend(pairs)
        if val:
            _write_lines(
                list_dir / "val.txt",
                val_header,
                (
                    f"{os.path.relpath(p.noisy, root)}\t{os.path.relpath(p.clean, root)}\t{p.subset}\t{p.fileid}"
                    for p in val
                ),
            )
            rescanned.append("val")

    empty = []
    if not clean:
        empty.append(f"clean/ has no readable {'/'.join(AUDIO_EXTENSIONS)} files")
    if not noise:
        empty.append(f"noise/ has no readable {'/'.join(AUDIO_EXTENSIONS)} files")
    if rir_root is not None and not rir:
        empty.append(f"RIR folder {rir_root} has no readable audio files")
    if not val:
        empty.append(
            "test_set/synthetic has no readable noisy/clean pairs (names must share fileid_N)"
        )
    if empty:
        raise FsnetError(f"{name} data root {root} is unusable: " + "; ".join(empty))
    return CorpusLists(root, rir_root, list_dir, clean, noise, rir, val, rescanned)


def rate_notices(lists: CorpusLists, sample_rate: int) -> list[str]:
    """One line per (kind, rate) that will be resampled or downmixed on the fly."""
    notices = []
    for kind, entries in (("clean", lists.clean), ("noise", lists.noise), ("RIR", lists.rir)):
        rates: dict[int, int] = {}
        multi = 0
        for e in entries:
            if e.sample_rate != sample_rate:
                rates[e.sample_rate] = rates.get(e.sample_rate, 0) + 1
            multi += e.channels > 1
        for rate, count in sorted(rates.items()):
            notices.append(
                f"{count} {kind} file(s) at {rate} Hz will be resampled to {sample_rate} Hz on the fly"
            )
        if multi:
            how = "one random channel used" if kind == "RIR" else "averaged to mono"
            notices.append(f"{multi} {kind} file(s) have several channels ({how})")
    return notices


# ------------------------------------------------------------------------------------ reading
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


# ------------------------------------------------------------------------------------ mixing
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

    sample_rate: int = 16000  # Hz
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
        self.snr_range_db = tuple(float(v) for v in self.snr_range_db)  # type: ignore[assignment]
        self.speed_factor_range = tuple(float(v) for v in self.speed_factor_range)  # type: ignore[assignment]
        self.noise_overlay_level_range_db = tuple(  # type: ignore[assignment]
            float(v) for v in self.noise_overlay_level_range_db
        )
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
        for name in (
            "clean_speed_probability",
            "noise_speed_probability",
            "clean_eq_probability",
            "noise_eq_probability",
            "noise_overlay_probability",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
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


class _SkipFile(Exception):
    """A file could not be read and was reported; draw another one."""


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
            f"data.noise_folder_weights names no noise folder: {', '.join(unknown)}"
            f" (noise folders: {', '.join(sorted(by_name))})"
        )
    ambiguous = sorted(name for name in weights if len(by_name[name]) > 1)
    if ambiguous:
        raise FsnetError(
            f"data.noise_folder_weights: {', '.join(ambiguous)} names several noise folders"
            f" ({', '.join(d for name in ambiguous for d in by_name[name])}); rename one"
        )
    kept = [(d, weights.get(os.path.basename(d), 1.0)) for d in dirs]
    kept = [(d, w) for d, w in kept if w > 0]
    if not kept:
        raise FsnetError("data.noise_folder_weights leaves no noise folder with weight > 0")
    groups = [folders[d] for d, _ in kept]
    if len({w for _, w in kept}) == 1:
        return groups, None  # equal weights draw exactly as no weights
    total = sum(w for _, w in kept)
    return groups, np.array([w / total for _, w in kept])


def _happens(rng: np.random.Generator, probability: float) -> bool:
    """True with ``probability``. Draws nothing when it is 0, so a config that leaves an optional
    augmentation off keeps the exact mixtures it had before that augmentation existed."""
    return probability > 0.0 and rng.random() < probability


def _seed_words(*values: int) -> list[int]:
    return [int(v) & 0xFFFFFFFFFFFFFFFF for v in values]


class TrainingMixtures(Dataset):
    """Map-style dataset of ``samples_per_epoch`` freshly mixed ``(noisy, target)`` examples.

    Example ``index`` of epoch ``epoch`` is a pure function of ``(seed, epoch, index)``. Call
    ``set_epoch`` before the epoch's DataLoader iterator is created (workers copy the dataset
    then, so the DataLoader must not use persistent workers).
    """

    def __init__(
        self,
        clean: Sequence[AudioEntry],
        noise: Sequence[AudioEntry],
        rir: Sequence[AudioEntry] = (),
        mixing: MixingConfig | None = None,
        samples_per_epoch: int = 1000,
        seed: int = 0,
        on_bad_file: str = "skip",
    ):
        if not clean or not noise:
            raise FsnetError("training needs at least one clean and one noise file")
        self.clean = list(clean)
        self.noise = list(noise)
        self.rir = list(rir)
        self.mixing = mixing or MixingConfig()
        self.samples_per_epoch = int(samples_per_epoch)
        if self.samples_per_epoch < 1:
            raise FsnetError(f"data.samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.seed = int(seed)
        self.on_bad_file = on_bad_file
        self.epoch = 0
        self._bad: set[str] = set()
        self._rir_cache: dict[str, np.ndarray] = {}
        self.noise_groups, self.noise_group_probs = group_noise_files(self.noise, self.mixing)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, target, _ = self.generate(index)
        return torch.from_numpy(noisy), torch.from_numpy(target)

    # ---------------------------------------------------------------- one example
    def generate(
        self, index: int, epoch: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``(noisy, target, info)`` of example ``index``: float32 ``[segment samples]`` each, at
        ``mixing.sample_rate``; ``info`` records every random choice."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(_seed_words(self.seed, epoch, index))
        m = self.mixing
        seg = m.segment_samples
        rir = None
        rir_path = None
        if self.rir and rng.random() < m.reverb_probability:
            rir_path, rir = self._draw_rir(rng)
        pre_roll = 0 if rir is None else rir.shape[0] - 1
        clean_steps = self._draw_speed(rng, m.clean_speed_probability)
        if clean_steps:
            # Read enough source samples for seg + pre_roll output samples at the new speed.
            factor = 1.0 + clean_steps / SPEED_GRID_STEPS
            clean_path, clean, lead = self._draw_clean(
                rng, math.ceil(seg * factor) + 2, math.ceil(pre_roll * factor)
            )
            lead_out = int(lead / factor)
            clean = change_speed(clean, clean_steps, lead_out + seg)
            lead = lead_out
        else:
            clean_path, clean, lead = self._draw_clean(rng, seg, pre_roll)
        if rir is not None:
            target_rir = rir
            if m.reverb_target == "early":
                peak = int(np.argmax(np.abs(rir)))
                target_rir = rir[: peak + int(EARLY_REFLECTIONS_SECONDS * m.sample_rate) + 1]
            target = fftconvolve(clean, target_rir)[lead : lead + seg]
            reverberant = (
                target if target_rir is rir else fftconvolve(clean, rir)[lead : lead + seg]
            )
        else:
            target = reverberant = clean[lead : lead + seg]
        noise_steps = self._draw_speed(rng, m.noise_speed_probability)
        if noise_steps:
            factor = 1.0 + noise_steps / SPEED_GRID_STEPS
            noise_paths, noise = self._draw_noise(rng, math.ceil(seg * factor) + 2)
            noise = change_speed(noise, noise_steps, seg)
        else:
            noise_paths, noise = self._draw_noise(rng, seg)
        snr = float(rng.uniform(*m.snr_range_db))
        level = float(
            rng.uniform(
                m.target_level_dbfs - m.target_level_jitter_db,
                m.target_level_dbfs + m.target_level_jitter_db,
            )
        )
        # Drawn after everything else, so switching the colouring on keeps each example's files,
        # speeds, SNR and level. Filtering the reverberant target equals filtering the dry speech
        # before the room (both are linear and time-invariant).
        clean_eq = self._draw_eq(rng, m.clean_eq_probability)
        noise_eq = self._draw_eq(rng, m.noise_eq_probability)
        if clean_eq is not None:
            coloured = lfilter(*clean_eq, target).astype(np.float32)
            reverberant = (
                coloured
                if reverberant is target
                else lfilter(*clean_eq, reverberant).astype(np.float32)
            )
            target = coloured
        overlay_paths: list[str] = []
        overlay_db = None
        if _happens(rng, m.noise_overlay_probability):
            overlay_paths, extra = self._draw_noise(rng, seg)
            overlay_db = float(rng.uniform(*m.noise_overlay_level_range_db))
            noise = overlay_noise(noise, extra, overlay_db)
        if noise_eq is not None:
            noise = lfilter(*noise_eq, noise).astype(np.float32)
        if target is reverberant:
            noisy, target = mix_at_snr(target, noise, snr, level, m.peak_limit)
        else:  # early-reflection target: mix the full reverberant speech, scale the target alike
            noisy, scaled = mix_at_snr(reverberant, noise, snr, level, m.peak_limit)
            power = float(np.mean(np.square(reverberant, dtype=np.float64)))
            gain = (
                math.sqrt(float(np.mean(np.square(scaled, dtype=np.float64))) / power)
                if power > 0
                else 0.0
            )
            target = (target * gain).astype(np.float32)
        info = {
            "clean": clean_path,
            "noise": noise_paths,
            "rir": rir_path,
            "snr_db": snr,
            "level_dbfs": level,
            "clean_speed": 1.0 + clean_steps / SPEED_GRID_STEPS,
            "noise_speed": 1.0 + noise_steps / SPEED_GRID_STEPS,
            "clean_eq": None if clean_eq is None else [c.tolist() for c in clean_eq],
            "noise_eq": None if noise_eq is None else [c.tolist() for c in noise_eq],
            "noise_overlay": overlay_paths,
            "noise_overlay_db": overlay_db,
            "epoch": epoch,
            "index": index,
        }
        return noisy, target, info

    # ---------------------------------------------------------------- drawing files
    def _draw_speed(self, rng: np.random.Generator, probability: float) -> int:
        """Grid steps of a speed factor (0 = unchanged), with ``probability``."""
        if not _happens(rng, probability):
            return 0
        k_low, k_high = self.mixing.speed_steps()
        return int(rng.integers(k_low, k_high + 1))

    def _draw_eq(
        self, rng: np.random.Generator, probability: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A random colouring filter ``(b, a)`` with ``probability``, else None."""
        if not _happens(rng, probability):
            return None
        return random_eq(rng, self.mixing.eq_coefficient_limit)

    def _read(self, kind: str, entry: AudioEntry, start: int, length: int) -> np.ndarray:
        try:
            return read_segment(entry, start, length, self.mixing.sample_rate)
        except Exception as exc:  # noqa: BLE001 - any decode problem: report by path
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if self.on_bad_file == "error":
                raise FsnetError(f"cannot read {kind} file {entry.path}: {reason}") from None
            if entry.path not in self._bad:
                self._bad.add(entry.path)
                log.warning("skipping unreadable %s file %s: %s", kind, entry.path, reason)
            raise _SkipFile from None

    def _pick(
        self,
        rng: np.random.Generator,
        groups: Sequence[Sequence[AudioEntry]],
        kind: str,
        group_probs: np.ndarray | None = None,
    ) -> AudioEntry:
        """A readable file: a group drawn (uniformly unless ``group_probs``; no draw when there is
        one), then a file in it, uniformly."""
        for _ in range(MAX_ATTEMPTS):
            if len(groups) == 1:
                group = groups[0]
            elif group_probs is None:
                group = groups[int(rng.integers(len(groups)))]
            else:
                group = groups[int(rng.choice(len(groups), p=group_probs))]
            entry = group[int(rng.integers(len(group)))]
            if entry.path not in self._bad:
                return entry
        raise FsnetError(
            f"could not find a readable {kind} file in {MAX_ATTEMPTS} draws (see the warnings above)"
        )

    def _draw_clean(
        self, rng: np.random.Generator, seg: int, pre_roll: int
    ) -> tuple[str, np.ndarray, int]:
        """``(path, samples, lead)``: ``lead`` samples of context before the segment, then ``seg``."""
        m = self.mixing
        for _attempt in range(MAX_ATTEMPTS):
            entry = self._pick(rng, (self.clean,), "clean")
            length = entry.length_at(m.sample_rate)
            try:
                if length >= seg:
                    start = int(rng.integers(0, length - seg + 1))
                    lead = min(pre_roll, start)
                    x = self._read("clean", entry, start - lead, seg + lead)
                else:
                    lead = 0
                    whole = self._read("clean", entry, 0, length)
                    if m.short_clean == "loop":
                        reps = -(-seg // length) + 1
                        offset = int(rng.integers(0, length))
                        x = np.tile(whole, reps)[offset : offset + seg]
                    else:
                        offset = int(rng.integers(0, seg - length + 1))
                        x = np.zeros(seg, dtype=np.float32)
                        x[offset : offset + length] = whole
            except _SkipFile:
                continue
            if math.sqrt(float(np.mean(np.square(x[lead:], dtype=np.float64)))) >= SILENT_RMS:
                return entry.path, x, lead
        raise FsnetError(
            f"no usable (readable, non-silent) clean segment found in {MAX_ATTEMPTS} draws"
        )

    def _draw_noise(self, rng: np.random.Generator, seg: int) -> tuple[list[str], np.ndarray]:
        """Random noise files joined by silences, starting at a random point of the first."""
        m = self.mixing
        gap_low, gap_high = m.silence_between_noises_seconds
        for _attempt in range(MAX_ATTEMPTS):
            parts: list[np.ndarray] = []
            paths: list[str] = []
            remaining = seg
            failures = 0
            while remaining > 0:
                entry = self._pick(rng, self.noise_groups, "noise", self.noise_group_probs)
                length = entry.length_at(m.sample_rate)
                start = int(rng.integers(0, length)) if not parts else 0
                count = min(length - start, remaining)
                try:
                    part = self._read("noise", entry, start, count)
                except _SkipFile:
                    failures += 1
                    if failures > MAX_ATTEMPTS:
                        raise FsnetError(
                            f"too many unreadable noise files (last: {entry.path})"
                        ) from None
                    continue
                if m.noise_gain_jitter_db > 0.0:
                    jitter = m.noise_gain_jitter_db
                    part = part * np.float32(10.0 ** (rng.uniform(-jitter, jitter) / 20.0))
                parts.append(part)
                paths.append(entry.path)
                remaining -= count
                if remaining > 0:
                    # a fixed gap draws nothing, so such configs mix what they always did
                    seconds = gap_low if gap_low == gap_high else rng.uniform(gap_low, gap_high)
                    silence = min(int(round(seconds * m.sample_rate)), remaining)
                    if silence:
                        parts.append(np.zeros(silence, dtype=np.float32))
                        remaining -= silence
            noise = np.concatenate(parts)
            if np.any(noise):
                return paths, noise
        return paths, noise  # all-silent noise: the mixture is then the clean target alone

    def _draw_rir(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        for _attempt in range(MAX_ATTEMPTS):
            entry = self._pick(rng, (self.rir,), "RIR")
            rir = self._rir_cache.get(entry.path)
            if rir is None:
                try:
                    data = read_frames(entry, 0, entry.frames)
                    if entry.sample_rate != self.mixing.sample_rate:
                        data = _resample(data.T, entry.sample_rate, self.mixing.sample_rate).T
                except Exception as exc:  # noqa: BLE001
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    if self.on_bad_file == "error":
                        raise FsnetError(f"cannot read RIR file {entry.path}: {reason}") from None
                    self._bad.add(entry.path)
                    log.warning("skipping unreadable RIR file %s: %s", entry.path, reason)
                    continue
                if not np.any(data):
                    self._bad.add(entry.path)
                    log.warning("skipping silent RIR file %s", entry.path)
                    continue
                rir = np.ascontiguousarray(data.T, dtype=np.float32)  # [channels, taps]
                if len(self._rir_cache) >= RIR_CACHE_SIZE:
                    self._rir_cache.pop(next(iter(self._rir_cache)))
                self._rir_cache[entry.path] = rir
            channel = int(rng.integers(rir.shape[0]))
            return entry.path, rir[channel]
        raise FsnetError(f"could not read any RIR in {MAX_ATTEMPTS} draws (see the warnings above)")


# ------------------------------------------------------------------------------------ validation
class ValidationPairs(Dataset):
    """The fixed synthetic test set: ``{"noisy", "clean", "name"}`` per pair, whole files as
    float32 tensors ``[N]`` at ``sample_rate``."""

    def __init__(self, pairs: Sequence[ValPair], sample_rate: int = 16000):
        self.pairs = list(pairs)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        noisy = load_whole(pair.noisy, self.sample_rate)
        clean = load_whole(pair.clean, self.sample_rate)
        if noisy.shape[0] != clean.shape[0]:  # DNS pairs are equal; be lenient with others
            n = min(noisy.shape[0], clean.shape[0])
            noisy, clean = noisy[:n], clean[:n]
        return {
            "noisy": torch.from_numpy(noisy),
            "clean": torch.from_numpy(clean),
            "name": pair.name,
        }


def collate_validation(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad a batch of pairs on the right: ``noisy``/``clean`` ``[B, N_max]``; ``lengths``
    ``[B]`` keeps the true lengths in samples."""
    lengths = torch.tensor([item["noisy"].shape[0] for item in items], dtype=torch.long)
    size = int(lengths.max())
    noisy = torch.zeros(len(items), size)
    clean = torch.zeros(len(items), size)
    for i, item in enumerate(items):
        noisy[i, : lengths[i]] = item["noisy"]
        clean[i, : lengths[i]] = item["clean"]
    return {
        "noisy": noisy,
        "clean": clean,
        "lengths": lengths,
        "names": [item["name"] for item in items],
    }


class UnpaddedDistributedSampler(torch.utils.data.distributed.DistributedSampler):
    """Rank r gets items r, r + W, ... with no duplicates, so validation metrics count each pair once."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False
        )

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def _worker_init(_worker_id: int) -> None:
    # Example randomness comes from (seed, epoch, index); only keep torch from oversubscribing cores.
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ data module
class DnsDataModule(pl.LightningDataModule):
    """DNS-layout corpus -> on-the-fly training mixtures and the fixed synthetic validation set."""

    def __init__(
        self,
        root: str | None,
        rir_root: str | None = None,
        list_dir: str | None = None,
        name: str = "dns",
        root_hint: str = "set recipe.root=<dir>",
        force_rescan: bool = False,
        sample_rate: int = 16000,
        segment_seconds: float = 3.072,
        snr_range_db: Sequence[float] = (-5.0, 20.0),
        target_level_dbfs: float = -25.0,
        target_level_jitter_db: float = 10.0,
        reverb_probability: float = 0.75,
        reverb_target: str = "reverberant",
        silence_between_noises_seconds: float | Sequence[float] = 0.2,
        short_clean: str = "pad",
        peak_limit: float = 0.999,
        clean_speed_probability: float = 0.0,
        noise_speed_probability: float = 0.0,
        speed_factor_range: Sequence[float] = (0.9, 1.1),
        clean_eq_probability: float = 0.0,
        noise_eq_probability: float = 0.0,
        eq_coefficient_limit: float = 0.375,
        noise_gain_jitter_db: float = 0.0,
        noise_overlay_probability: float = 0.0,
        noise_overlay_level_range_db: Sequence[float] = (-10.0, 0.0),
        noise_balance: str = "file",
        noise_folder_weights: Mapping[str, float] | None = None,
        samples_per_epoch: int = 360000,
        batch_size: int = 72,
        val_batch_size: int = 8,
        num_workers: int = 8,
        val_num_workers: int = 2,
        prefetch_factor: int = 4,
        pin_memory: bool | None = None,
        seed: int = 0,
        on_bad_file: str = "skip",
        val_max_files: int | None = None,
    ):
        super().__init__()
        # str(): a folder named like a number (recipe.root=2024) reaches here as an int from Hydra.
        self.root, self.rir_root, self.list_dir = (
            None if p is None else str(p) for p in (root, rir_root, list_dir)
        )
        self.name = name
        self.root_hint = root_hint
        self.force_rescan = bool(force_rescan)
        self.mixing = MixingConfig(
            sample_rate=int(sample_rate),
            segment_seconds=float(segment_seconds),
            snr_range_db=tuple(snr_range_db),  # type: ignore[arg-type]
            target_level_dbfs=float(target_level_dbfs),
            target_level_jitter_db=float(target_level_jitter_db),
            reverb_probability=float(reverb_probability),
            reverb_target=reverb_target,
            silence_between_noises_seconds=silence_between_noises_seconds,  # type: ignore[arg-type]
            short_clean=short_clean,
            peak_limit=float(peak_limit),
            clean_speed_probability=float(clean_speed_probability),
            noise_speed_probability=float(noise_speed_probability),
            speed_factor_range=tuple(speed_factor_range),  # type: ignore[arg-type]
            clean_eq_probability=float(clean_eq_probability),
            noise_eq_probability=float(noise_eq_probability),
            eq_coefficient_limit=float(eq_coefficient_limit),
            noise_gain_jitter_db=float(noise_gain_jitter_db),
            noise_overlay_probability=float(noise_overlay_probability),
            noise_overlay_level_range_db=tuple(noise_overlay_level_range_db),  # type: ignore[arg-type]
            noise_balance=noise_balance,
            noise_folder_weights=noise_folder_weights or {},
        )
        if on_bad_file not in ("skip", "error"):
            raise FsnetError(f"data.on_bad_file must be skip or error, got {on_bad_file!r}")
        self.samples_per_epoch = int(samples_per_epoch)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        if self.batch_size < 1 or self.val_batch_size < 1:
            raise FsnetError("data.batch_size and data.val_batch_size must be >= 1")
        if self.samples_per_epoch < self.batch_size:
            raise FsnetError(
                f"data.samples_per_epoch ({self.samples_per_epoch}) is smaller than data.batch_size ({self.batch_size})"
            )
        self.num_workers = int(num_workers)
        self.val_num_workers = int(val_num_workers)
        self.prefetch_factor = int(prefetch_factor)
        if self.num_workers < 0 or self.val_num_workers < 0 or self.prefetch_factor < 1:
            raise FsnetError(
                "data.num_workers and data.val_num_workers must be >= 0 (0 = load in the "
                "training process) and data.prefetch_factor >= 1"
            )
        self.pin_memory = pin_memory
        self.seed = int(seed)
        self.on_bad_file = on_bad_file
        if val_max_files is not None and (
            isinstance(val_max_files, bool)
            or not isinstance(val_max_files, int)
            or val_max_files < 1
        ):
            raise FsnetError(
                f"data.val_max_files must be null (all pairs) or a whole number >= 1, got {val_max_files!r}"
            )
        self.val_max_files = val_max_files
        self.lists: CorpusLists | None = None
        self.train_set: TrainingMixtures | None = None
        self.val_set: ValidationPairs | None = None

    # ---------------------------------------------------------------- scanning
    def scan(self, force: bool | None = None, report: bool = True) -> CorpusLists:
        """Scan the tree (cached lists); FsnetError names what is missing. Idempotent."""
        if self.lists is None or force:
            self.lists = scan_corpus(
                self.root,
                self.rir_root,
                self.list_dir,
                force=self.force_rescan if force is None else force,
                on_bad_file=self.on_bad_file,
                name=self.name,
                root_hint=self.root_hint,
            )
            if report:
                lists = self.lists
                how = f"scanned {', '.join(lists.rescanned)}" if lists.rescanned else "cached lists"
                log.info("%s data: %s (%s in %s)", self.name, lists.summary(), how, lists.list_dir)
                if lists.rir_root is None:
                    log.info(
                        "no RIR folder (recipe.rir_root is null): training without reverberation"
                    )
                for notice in rate_notices(lists, self.mixing.sample_rate):
                    log.info("%s", notice)
            group_noise_files(self.lists.noise, self.mixing)  # a misnamed weight stops here
        return self.lists

    def prepare_data(self) -> None:  # local rank 0 only: write the cached lists
        self.scan()

    def setup(self, stage: str | None = None) -> None:
        lists = self.scan(report=False)
        if self.train_set is None:
            self.train_set = TrainingMixtures(
                lists.clean,
                lists.noise,
                lists.rir,
                self.mixing,
                samples_per_epoch=self.samples_per_epoch,
                seed=self.seed,
                on_bad_file=self.on_bad_file,
            )
        if self.val_set is None:
            pairs = lists.val
            if self.val_max_files and len(pairs) > self.val_max_files:
                # evenly spread, deterministic subset (covers both subsets)
                picks = np.linspace(0, len(pairs) - 1, int(self.val_max_files)).round().astype(int)
                pairs = [pairs[i] for i in sorted(set(picks.tolist()))]
            self.val_set = ValidationPairs(pairs, self.mixing.sample_rate)

    # ---------------------------------------------------------------- loaders
    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else bool(self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # also right after a resume: the restored epoch
            self.train_set.set_epoch(trainer.current_epoch)
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers > 0 else {}
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=False,  # every index is a fresh random mixture; Lightning shards the indices in DDP
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self._pin(),
            persistent_workers=False,  # workers must see set_epoch() of each new epoch
            worker_init_fn=_worker_init,
            **extra,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = UnpaddedDistributedSampler(
                self.val_set, torch.distributed.get_world_size(), torch.distributed.get_rank()
            )
        return DataLoader(
            self.val_set,
            batch_size=self.val_batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.val_num_workers,
            pin_memory=self._pin(),
            collate_fn=collate_validation,
            worker_init_fn=_worker_init,
        )
