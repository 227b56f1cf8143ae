"""Corpus trees: scanning a DNS-layout folder, the cached file lists, validation pairing.

Layout (DNS Challenge, Interspeech 2020; the ``debian_audio`` corpus uses the same one)::

    <root>/clean/**/*.{wav,flac,ogg}                               training speech
    <root>/noise/**/*.{wav,flac,ogg}                               training noise
    <root>/test_set/synthetic/{no_reverb,with_reverb}/clean/*      validation references
    <root>/test_set/synthetic/{no_reverb,with_reverb}/noisy/*      validation inputs
    <rir_root>/**/*.{wav,flac,ogg}                                 room impulse responses (optional)

Validation pairs match by :func:`fsnet.audio.fileid` (``clean_fileid_7.wav`` pairs with
``..._fileid_7.wav`` of the same subset), the rule evaluation and the recipes pair by.
The scan caches every file's length and sample rate in text lists, so nothing later reads a whole
long file to learn its length.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from fsnet.audio import AUDIO_EXTENSIONS, fileid  # the formats load_audio reads; the pairing rule
from fsnet.errors import FsnetError

log = logging.getLogger("fsnet.data")

LIST_FORMAT = "fsnet-filelist v1"
VAL_SUBSETS = ("no_reverb", "with_reverb")


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
        number = fileid(path)
        if number is not None:
            clean_by_id[number] = path
    pairs = []
    unpaired = []
    for path in find_audio_files(subset_dir / "noisy"):
        number = fileid(path)
        if number is None or number not in clean_by_id:
            unpaired.append(path.name)
            continue
        pairs.append(ValPair(str(path), str(clean_by_id[number]), subset, number))
    if unpaired:
        problems.append(
            f"{len(unpaired)} noisy file(s) in {subset_dir}/noisy without a clean_fileid_N partner (e.g. {unpaired[0]})"
        )
    # both files of a pair must be readable
    flat = [Path(p.noisy) for p in pairs] + [Path(p.clean) for p in pairs]
    ok = {e.path for e in probe_files(flat, on_bad_file)}
    pairs = [p for p in pairs if p.noisy in ok and p.clean in ok]
    return sorted(pairs, key=lambda p: p.fileid), problems


def _check_tree(
    root: str | os.PathLike | None,
    rir_root: str | os.PathLike | None,
    name: str,
    root_hint: str,
) -> tuple[Path, Path | None, list[Path]]:
    """``(root, rir_root or None, validation subset folders)``, resolved; FsnetError naming
    everything that is missing."""
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
    return root, rir_root, subsets


def _val_list(
    root: Path,
    subsets: Sequence[Path],
    list_file: Path,
    force: bool,
    on_bad_file: str,
    rescanned: list[str],
) -> list[ValPair]:
    """The validation pairs of every subset, from the cached list or paired afresh."""
    val_header = f"{LIST_FORMAT} kind=val root={root}"
    val_lines = None if force else _read_lines(list_file, val_header)
    if val_lines is not None:
        val = []
        for line in val_lines:
            noisy, clean_rel, subset, number = line.rsplit("\t", 3)
            val.append(ValPair(str(root / noisy), str(root / clean_rel), subset, int(number)))
        return val
    val = []
    for subset_dir in subsets:
        pairs, problems = _pair_subset(subset_dir, on_bad_file)
        for problem in problems:
            log.warning("%s", problem)
        val.extend(pairs)
    if val:
        _write_lines(
            list_file,
            val_header,
            (
                f"{os.path.relpath(p.noisy, root)}\t{os.path.relpath(p.clean, root)}\t{p.subset}\t{p.fileid}"
                for p in val
            ),
        )
        rescanned.append("val")
    return val


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
    root, rir_root, subsets = _check_tree(root, rir_root, name, root_hint)
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
    val = _val_list(root, subsets, list_dir / "val.txt", force, on_bad_file, rescanned)

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
