"""Finding a test set's files and pairing noisy inputs with clean references.

A test set is a DNS-Challenge folder (``clean/clean_fileid_N.wav`` + ``noisy/<any>_fileid_N.wav``;
files without a ``fileid_N`` suffix pair by identical names, as in VoiceBank-DEMAND), a folder of
noisy recordings only, or a folder whose sub-folders are test sets of one layout (DNS
``test_set/synthetic/{no_reverb,with_reverb}``). Noisy and clean files pair through
:func:`fsnet.audio.fileid`, the rule training's validation sets and the recipes use too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fsnet import audio
from fsnet.audio import AUDIO_EXTENSIONS
from fsnet.errors import FsnetError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TESTSET = REPO_ROOT / "assets" / "demo_testset"
_EXTENSIONS = "/".join(AUDIO_EXTENSIONS)


@dataclass
class Item:
    """One test file: the noisy input and, in DNS layout, its clean reference; ``subset`` is the
    sub-folder it came from when the test set is a folder of test sets (else empty)."""

    key: str
    noisy: Path
    clean: Path | None = None
    subset: str = ""

    @property
    def name(self) -> str:
        return self.noisy.name

    def where(self, name: str) -> str:
        """``name`` (a file name or a message about the item) prefixed with ``<subset>/``."""
        return f"{self.subset}/{name}" if self.subset else name


def pair_key(path: Path) -> str:
    """``noisy_snr5_fileid_12.wav`` and ``clean_fileid_12.wav`` -> ``fileid_12``; else the stem."""
    number = audio.fileid(path)  # the one pairing rule (training and recipes use it too)
    return f"fileid_{number}" if number is not None else path.stem


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _audio_files(directory: Path) -> list[Path]:
    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS
    ]
    return sorted(files, key=_natural_key)


def _by_key(files: list[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = pair_key(f)
        if key in out:
            raise FsnetError(
                f"two {what} files share the pairing key {key}: {out[key].name}, {f.name}"
            )
        out[key] = f
    return out


def list_names(paths: list[Path], limit: int = 5) -> str:
    names = ", ".join(p.name for p in paths[:limit])
    return names + (f" (and {len(paths) - limit} more)" if len(paths) > limit else "")


def _is_testset(directory: Path) -> bool:
    """Whether ``directory`` holds a test set of its own: ``clean/``, or audio directly or in
    ``noisy/`` (else it may be a folder of test sets, see :func:`scan_testset`)."""
    noisy_dir = directory / "noisy"
    return (
        (directory / "clean").is_dir()
        or bool(_audio_files(directory))
        or (noisy_dir.is_dir() and bool(_audio_files(noisy_dir)))
    )


def scan_testset(
    root: str | os.PathLike, allow_unpaired: bool = False
) -> tuple[list[Item], str, list[str]]:
    """Find the files of a test set -> ``(items, layout, notices)``; layout ``paired``/``noisy_only``.

    A ``root`` with no test set of its own whose immediate sub-folders are test sets (DNS
    ``test_set/synthetic/{no_reverb,with_reverb}``) is a set of subsets: the items of every such
    sub-folder, in order of name, each with ``subset`` set to the folder's name; other sub-folders
    are ignored with a notice. All subsets must share one layout.

    Raises ``FsnetError`` for a missing directory, no audio, duplicate keys, or (unless
    ``allow_unpaired``) noisy files without a clean reference or clean files without noisy input.
    """
    root = Path(root)
    if not root.exists():
        hint = (
            " (the demo set is not in this checkout; pass testset=DIR)"
            if root == DEFAULT_TESTSET
            else ""
        )
        raise FsnetError(f"test set directory not found: {root}{hint}")
    if not root.is_dir():
        raise FsnetError(f"test set must be a directory, got a file: {root}")
    if _is_testset(root):
        return _scan_one(root, allow_unpaired)
    return _scan_subsets(root, allow_unpaired)


def _scan_subsets(root: Path, allow_unpaired: bool) -> tuple[list[Item], str, list[str]]:
    """:func:`scan_testset` of a folder of test sets."""
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=_natural_key,
    )
    subsets = [p for p in folders if _is_testset(p)]
    if not subsets:
        noisy_dir = root / "noisy"
        looked = (
            f", and none of its sub-folders ({list_names(folders)}) is a test set"
            if folders
            else ""
        )
        raise FsnetError(
            f"no audio files ({_EXTENSIONS}) in {noisy_dir if noisy_dir.is_dir() else root}{looked}"
        )
    notices = [
        f"sub-folder {p.name}/ is not a test set (no clean/, no audio directly or in noisy/); ignored"
        for p in folders
        if p not in subsets
    ]
    items: list[Item] = []
    layouts: dict[str, list[str]] = {}
    for folder in subsets:
        sub_items, layout, sub_notices = _scan_one(folder, allow_unpaired)
        for item in sub_items:
            item.subset = folder.name
        items += sub_items
        notices += sub_notices
        layouts.setdefault(layout, []).append(folder.name)
    if len(layouts) > 1:
        raise FsnetError(
            f"the subsets of {root} mix clean+noisy pairs ({', '.join(layouts['paired'])}) and "
            f"noisy-only sets ({', '.join(layouts['noisy_only'])}); evaluate them separately "
            f"(testset={root / layouts['noisy_only'][0]})"
        )
    return items, next(iter(layouts)), notices


def _scan_one(root: Path, allow_unpaired: bool) -> tuple[list[Item], str, list[str]]:
    """:func:`scan_testset` of a directory that holds one test set."""
    if (root / "clean").is_dir():
        return _scan_pairs(root, allow_unpaired)
    noisy_dir = root / "noisy"
    directory = noisy_dir if noisy_dir.is_dir() else root
    files = _audio_files(directory)
    if not files:
        raise FsnetError(f"no audio files ({_EXTENSIONS}) in {directory}")
    return [Item(p.stem, p) for p in files], "noisy_only", []


def _scan_pairs(root: Path, allow_unpaired: bool) -> tuple[list[Item], str, list[str]]:
    """:func:`scan_testset` of a DNS-layout directory: ``clean/`` and ``noisy/``."""
    clean_dir, noisy_dir = root / "clean", root / "noisy"
    if not noisy_dir.is_dir():
        raise FsnetError(f"{root} has clean/ but no noisy/ directory")
    noisy_files, clean_files = _audio_files(noisy_dir), _audio_files(clean_dir)
    if not noisy_files:
        raise FsnetError(f"no audio files ({_EXTENSIONS}) in {noisy_dir}")
    if not clean_files:
        raise FsnetError(f"no audio files ({_EXTENSIONS}) in {clean_dir}")
    noisy, clean = _by_key(noisy_files, "noisy"), _by_key(clean_files, "clean")
    no_clean = [p for k, p in noisy.items() if k not in clean]
    no_noisy = [p for k, p in clean.items() if k not in noisy]
    notices: list[str] = []
    if no_clean or no_noisy:
        parts = []
        if no_clean:
            parts.append(
                f"{len(no_clean)} noisy file(s) without a clean reference: {list_names(no_clean)}"
            )
        if no_noisy:
            parts.append(
                f"{len(no_noisy)} clean file(s) without a noisy input: {list_names(no_noisy)}"
            )
        msg = f"unpaired files in {root}: " + "; ".join(parts)
        if not allow_unpaired:
            raise FsnetError(
                msg + " (files pair by their fileid_N suffix, else by identical names; "
                "set allow_unpaired=true to skip them)"
            )
        notices.append(msg + "; skipped (allow_unpaired=true)")
    items = [Item(k, p, clean[k]) for k, p in noisy.items() if k in clean]
    if not items:
        raise FsnetError(f"no noisy file in {noisy_dir} has a clean reference in {clean_dir}")
    return items, "paired", notices


# Enhanced audio keeps the input's format when it is one of these (write_audio writes them), else
# becomes .wav.
_KEPT_SUFFIXES = (".wav", ".flac", ".ogg")


def output_names(items: list[Item], kind: str) -> tuple[list[str], list[str]]:
    """File names of the items' enhanced audio (``kind="enhanced"``) or spectrogram plots
    (``kind="plots"``), all distinct, and notices about the renamed ones.

    Normally ``a.opus`` -> ``a.wav`` / ``a.png`` and ``a.flac`` -> ``a.flac`` / ``a.png``. When
    two inputs would share an output (``a.wav`` + ``a.opus`` in a noisy-only set, or ``a.flac`` +
    ``a.wav`` for the plots), those inputs keep their suffix in the output stem: ``a.opus.wav``,
    ``a.wav.png``, ``a.opus.png``, so every file is saved, under a name that says which input it
    came from (a paired set cannot collide: noisy files that share a stem share a pairing key,
    which scan_testset rejects). Items of a subset go to a folder of that name: ``<subset>/a.wav``.
    Raises ``FsnetError`` if names still collide.
    """
    if kind == "enhanced":
        names = [
            i.where(
                i.noisy.name if i.noisy.suffix.lower() in _KEPT_SUFFIXES else i.noisy.stem + ".wav"
            )
            for i in items
        ]
        ext, what = ".wav", "enhanced audio"
    else:
        names = [i.where(i.noisy.stem + ".png") for i in items]
        ext, what = ".png", "plots"
    notices = []
    groups: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        groups.setdefault(name, []).append(k)
    for name, idx in groups.items():
        if len(idx) < 2:
            continue
        for k in idx:
            own = items[k].where(items[k].noisy.name)  # an input's own name is already unique
            if names[k] != own:
                names[k] = own + ext
        notices.append(
            f"{list_names([items[k].noisy for k in idx])} would share the output name "
            f"{name}; {what} saved as {', '.join(names[k] for k in idx)}"
        )
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in seen:  # only with contrived names such as a.opus + a.opus.wav + a.wav
            raise FsnetError(
                f"{items[seen[name]].noisy.name} and {items[k].noisy.name} would both be saved "
                f"as {name} ({what}); rename one of them"
            )
        seen[name] = k
    return names, notices
