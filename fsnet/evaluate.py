"""Evaluate a model on a test set: PESQ, STOI, SI-SDR, DNSMOS and the real-time factor.

``python evaluate.py checkpoint=PATH testset=DIR mode=offline|streaming|both`` (Hydra CLI, see
``configs/evaluate.yaml``). A test set is either

* DNS-Challenge layout: ``clean/clean_fileid_N.wav`` and ``noisy/<anything>_fileid_N.wav``
  (files without a ``fileid_N`` suffix are paired by identical names, as in VoiceBank-DEMAND);
  every metric is computed for the noisy input and the enhanced output; or
* noisy only (real recordings): audio files directly in the directory or in ``noisy/`` with no
  ``clean/``; only DNSMOS is computed;

or a directory of test sets of one layout (DNS ``test_set/synthetic/{no_reverb,with_reverb}``):
each is reported on its own and all files together, outputs go to per-subset folders.

Enhancement runs in the main process (and is what the real-time factor measures); metrics are
computed afterwards in worker processes. Results go to the Hydra run directory (or
``output_dir``): ``per_file.csv``, ``summary.json``, ``summary.md``, optional enhanced audio and
spectrogram plots. A Markdown table goes to stdout; notices and progress go to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fsnet import metrics as M
from fsnet.errors import FsnetError, fsnet_cause

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
CONFIG_DIR = REPO_ROOT / "configs"
CONFIG_NAME = "evaluate"
DEFAULT_TESTSET = REPO_ROOT / "assets" / "demo_testset"
MODES = ("offline", "streaming", "both")
SAMPLE_RATE = 16000


# Keys whose value is a path. Hydra parses ``testset=2024`` as an int and ``output_dir=2024.10`` as
# the float 2024.1, so for these keys the text typed on the command line is used instead.
PATH_KEYS = ("checkpoint", "testset", "output_dir")


def _raw_overrides(task_overrides: Any) -> dict[str, str]:
    """``{key: text after '='}`` of the command-line overrides (``key=v``, ``+key=v``, ``++key=v``)."""
    raw: dict[str, str] = {}
    for line in task_overrides or ():
        key, sep, text = str(line).lstrip("+").partition("=")
        if sep:
            raw[key.strip()] = text.strip()
    return raw


def _path_text(key: str, value: Any, raw: Mapping[str, str]) -> Any:
    """A path key's value as text: the typed text for a value Hydra read as a number or boolean."""
    if isinstance(value, (bool, int, float)):
        return raw.get(key, str(value))
    return value


def _check_output_dir(path: Path) -> None:
    for q in (path, *path.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == path else f" ({q} is a file)"
                raise FsnetError(f"output_dir {path} is not a directory{where}")
            return


def _first_set(value: Any, default: Any, *, _root_: Any = None) -> Any:
    """hydra.run.dir: ``output_dir`` (as typed, ``~`` expanded) when given, else ``default``."""
    if value is None or not isinstance(value, (str, bool, int, float)) or not str(value).strip():
        return default  # a list/dict output_dir is rejected with a one-line error by _options
    overrides = OmegaConf.select(_root_, "hydra.overrides.task") if _root_ is not None else None
    path = Path(str(_path_text("output_dir", value, _raw_overrides(overrides)))).expanduser()
    _check_output_dir(path)  # else Hydra fails with a bare "[Errno 17] File exists: ..."
    return str(path)


# hydra.run.dir in evaluate.yaml: ``output_dir`` when given, else a timestamped default.
if not OmegaConf.has_resolver("fsnet.first_set"):
    OmegaConf.register_new_resolver("fsnet.first_set", _first_set)


# ----------------------------------------------------------------------------------- test set


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


_FILEID = re.compile(r"fileid_(\d+)$")


def _pair_key(path: Path) -> str:
    """``noisy_snr5_fileid_12.wav`` and ``clean_fileid_12.wav`` -> ``fileid_12``; else the stem."""
    m = _FILEID.search(path.stem)
    return f"fileid_{int(m.group(1))}" if m else path.stem


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _audio_files(directory: Path) -> list[Path]:
    from fsnet.audio import AUDIO_EXTENSIONS

    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS
    ]
    return sorted(files, key=_natural_key)


def _by_key(files: list[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = _pair_key(f)
        if key in out:
            raise FsnetError(
                f"two {what} files share the pairing key {key}: {out[key].name}, {f.name}"
            )
        out[key] = f
    return out


def _list_names(paths: list[Path], limit: int = 5) -> str:
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
    from fsnet.audio import AUDIO_EXTENSIONS

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
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=_natural_key,
    )
    exts = "/".join(AUDIO_EXTENSIONS)
    subsets = [p for p in folders if _is_testset(p)]
    if not subsets:
        noisy_dir = root / "noisy"
        looked = (
            f", and none of its sub-folders ({_list_names(folders)}) is a test set"
            if folders
            else ""
        )
        raise FsnetError(
            f"no audio files ({exts}) in {noisy_dir if noisy_dir.is_dir() else root}{looked}"
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
    from fsnet.audio import AUDIO_EXTENSIONS

    exts = "/".join(AUDIO_EXTENSIONS)
    clean_dir, noisy_dir = root / "clean", root / "noisy"
    notices: list[str] = []
    if clean_dir.is_dir():
        if not noisy_dir.is_dir():
            raise FsnetError(f"{root} has clean/ but no noisy/ directory")
        noisy_files, clean_files = _audio_files(noisy_dir), _audio_files(clean_dir)
        if not noisy_files:
            raise FsnetError(f"no audio files ({exts}) in {noisy_dir}")
        if not clean_files:
            raise FsnetError(f"no audio files ({exts}) in {clean_dir}")
        noisy, clean = _by_key(noisy_files, "noisy"), _by_key(clean_files, "clean")
        no_clean = [p for k, p in noisy.items() if k not in clean]
        no_noisy = [p for k, p in clean.items() if k not in noisy]
        if no_clean or no_noisy:
            parts = []
            if no_clean:
                parts.append(
                    f"{len(no_clean)} noisy file(s) without a clean reference: {_list_names(no_clean)}"
                )
            if no_noisy:
                parts.append(
                    f"{len(no_noisy)} clean file(s) without a noisy input: {_list_names(no_noisy)}"
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
    directory = noisy_dir if noisy_dir.is_dir() else root
    files = _audio_files(directory)
    if not files:
        raise FsnetError(f"no audio files ({exts}) in {directory}")
    return [Item(p.stem, p) for p in files], "noisy_only", notices


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
            f"{_list_names([items[k].noisy for k in idx])} would share the output name "
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


# -------------------------------------------------------------------------------- configuration

_DEFAULTS: dict[str, Any] | None = None


def default_config() -> dict[str, Any]:
    """The keys of ``configs/evaluate.yaml`` (without the ``hydra`` node) as a plain dict."""
    global _DEFAULTS
    if _DEFAULTS is None:
        path = CONFIG_DIR / f"{CONFIG_NAME}.yaml"
        if not path.is_file():
            raise FsnetError(f"config file not found: {path}")
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        cfg.pop("hydra", None)
        cfg.pop("defaults", None)
        _DEFAULTS = cfg
    return dict(_DEFAULTS)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping) and not OmegaConf.is_config(cfg):
        return dict(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


@dataclass
class Options:
    checkpoint: str | None
    norm: str | None
    testset: Path
    mode: str
    stream_block_samples: int
    device: str
    num_threads: int
    num_workers: int
    metrics: tuple[str, ...]
    allow_unpaired: bool
    save_enhanced: bool
    plot: int
    output_dir: Path | None
    progress: bool
    diff_tolerance: float
    precision: str


def _options(cfg: Any) -> Options:
    values = default_config()
    given = _as_dict(cfg)
    given.pop("hydra", None)
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise FsnetError(f"unknown evaluate option(s) {unknown}; known: {sorted(values)}")
    values.update(given)
    problems = []
    mode = str(values["mode"])
    if mode not in MODES:
        problems.append(f"mode must be one of {'|'.join(MODES)}, got {mode!r}")

    def integer(key: str, minimum: int) -> int:
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            problems.append(f"{key} must be an integer >= {minimum}, got {v!r}")
            return minimum
        return v

    def boolean(key: str) -> bool:
        v = values[key]
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        if not isinstance(v, bool):
            problems.append(f"{key} must be true or false, got {v!r}")
            return False
        return v

    def path(key: str) -> str | None:
        v = values[key]
        if v is None:
            return None
        if isinstance(v, str) and not v.strip():
            # most often an unset shell variable (testset=$DIR): scoring the default instead
            # would look like an answer about the folder the user meant
            problems.append(f"{key}= is empty; give a path, or leave {key} out for its default")
            return None
        if isinstance(v, (str, bool, int, float)):
            return str(v)
        kind = "a list" if isinstance(v, (list, tuple)) else type(v).__name__
        problems.append(f"{key} must be a path (or null), got {kind}: {v!r}")
        return None

    allow_unpaired = boolean("allow_unpaired")
    save_enhanced = boolean("save_enhanced")
    progress = boolean("progress")
    testset, checkpoint, out = path("testset"), path("checkpoint"), path("output_dir")
    block = integer("stream_block_samples", 1)
    threads = integer("num_threads", 0)
    plot = integer("plot", 0)
    workers = values["num_workers"]
    if workers is None:
        workers = os.cpu_count() or 1
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        problems.append(f"num_workers must be null or an integer >= 0, got {workers!r}")
        workers = 0
    device = str(values["device"])
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        problems.append(f"device must be cpu or cuda (or cuda:N), got {device!r}")
    norm = values.get("norm")
    if norm not in (None, "cumulative", "utterance"):
        problems.append(f"norm must be null, cumulative or utterance, got {norm!r}")
    names = values["metrics"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    metric_names: tuple[str, ...] = ()
    if names is not None and (
        not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)
    ):
        problems.append(
            f"metrics must be a list of metric names, e.g. [pesq_wb,stoi], got {names!r}"
        )
    else:
        try:
            metric_names = M.expand_metric_names(names or [])
        except ValueError as exc:
            problems.append(str(exc))
        if not metric_names and not problems:
            problems.append("metrics is empty: nothing to compute")
    tol = values["diff_tolerance"]
    try:
        tol = float(tol) if not isinstance(tol, bool) else math.nan
    except (TypeError, ValueError):
        tol = math.nan
    if not (math.isfinite(tol) and tol >= 0):
        problems.append(f"diff_tolerance must be a number >= 0, got {values['diff_tolerance']!r}")
        tol = 1e-3
    precision = str(values["precision"])
    if precision not in ("fp32", "int8", "bf16", "onnx", "onnx-int8"):
        problems.append(f"precision must be fp32, int8, bf16, onnx or onnx-int8, got {precision!r}")
    elif precision in ("int8", "onnx", "onnx-int8") and device != "cpu":
        problems.append(f"precision={precision} is a CPU path; use device=cpu")
    elif precision.startswith("onnx") and mode == "offline":
        problems.append(f"precision={precision} is a streaming engine; use mode=streaming or both")
    elif precision == "bf16" and device == "cpu":
        problems.append("precision=bf16 is the GPU path; use device=cuda")
    if problems:
        raise FsnetError("; ".join(problems))
    return Options(
        checkpoint=str(Path(checkpoint).expanduser().resolve()) if checkpoint else None,
        norm=norm,
        testset=Path(testset).expanduser().resolve() if testset else DEFAULT_TESTSET,
        mode=mode,
        stream_block_samples=block,
        device=device,
        num_threads=threads,
        num_workers=workers,
        metrics=metric_names,
        allow_unpaired=allow_unpaired,
        save_enhanced=save_enhanced,
        plot=plot,
        output_dir=Path(out).expanduser() if out else None,
        progress=progress,
        diff_tolerance=tol,
        precision=precision,
    )


def _output_dir(opts: Options) -> Path:
    if opts.output_dir is not None:
        _check_output_dir(opts.output_dir)
        return opts.output_dir.resolve()
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir).resolve()
    except (ImportError, ValueError):
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return (Path.cwd() / "outputs" / "evaluate" / stamp).resolve()


# ---------------------------------------------------------------------------------- enhancement


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def enhance_streaming(engine, x: np.ndarray, block: int) -> np.ndarray:
    """Run ``x`` through a StreamingEnhancer ``block`` samples at a time, aligned to the input.

    The stream is the enhancement delayed by ``latency_samples``; that many leading samples are
    dropped so the result lines up with ``x`` sample for sample.
    """
    outs = [engine.process(x[i : i + block]) for i in range(0, x.shape[0], block)]
    outs.append(engine.flush())
    y = np.concatenate([np.asarray(o, dtype=np.float32) for o in outs])
    lat = engine.latency_samples
    if y.shape[0] < lat + x.shape[0]:
        raise RuntimeError(
            f"streaming produced {y.shape[0]} samples for {x.shape[0]} input samples "
            f"(latency {lat}); expected {lat + x.shape[0]}"
        )
    return y[lat : lat + x.shape[0]]


def _load_model(opts: Options):
    import torch

    from fsnet.checkpoint import load_model

    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise FsnetError(f"device={opts.device} but CUDA is not available here; use device=cpu")
    overrides = {"norm": opts.norm} if opts.norm else {}
    model = load_model(opts.checkpoint, device=opts.device, **overrides)
    if model.config.sample_rate != SAMPLE_RATE:
        # the test set is read, and PESQ/STOI/DNSMOS scored, at 16 kHz
        raise FsnetError(
            f"{opts.checkpoint} is a {model.config.sample_rate} Hz model; evaluate.py scores "
            f"{SAMPLE_RATE} Hz models"
        )
    model.num_parameters = sum(
        p.numel() for p in model.parameters()
    )  # before quantization hides them
    if opts.precision == "int8":
        from fsnet.quantize import quantize_int8

        model = quantize_int8(model)
    return model


# ------------------------------------------------------------------------------------- metrics


def _init_worker() -> None:
    # Ctrl-C goes to the whole process group: let the main process handle it alone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    M.set_dnsmos_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _metric_task(
    index: int,
    signal_name: str,
    estimate: np.ndarray,
    reference: np.ndarray | None,
    names: tuple[str, ...],
) -> tuple[int, str, dict[str, float], list[str]]:
    """Worker: metrics of one signal of one file, with the warnings they raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = M.compute_metrics(estimate, reference, names)
    messages = [str(w.message) for w in caught if issubclass(w.category, M.MetricWarning)]
    return index, signal_name, values, messages


class _Interrupted(KeyboardInterrupt):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Interrupted()


# --------------------------------------------------------------------------------------- output


def _fmt(value: float | None, signed: bool = False, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_diff(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "NaN in one"
    return f"{value:.1e}" if value else "0"


ROW_LABELS = {
    "pesq_wb": "WB-PESQ",
    "pesq_nb": "NB-PESQ",
    "stoi": "STOI",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR (dB)",
    "dnsmos_sig": "DNSMOS SIG",
    "dnsmos_bak": "DNSMOS BAK",
    "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_p808": "DNSMOS P.808",
}


def format_tables(summary: Mapping[str, Any]) -> str:
    """The Markdown report printed on stdout (also saved as ``summary.md``): a table per mode, for
    a folder of test sets one per subset and mode and one over all files, and in ``mode=both``
    the offline/streaming agreement over all files."""
    lines = []
    n, secs = summary["num_files"], summary["audio_seconds"]
    layout = "clean+noisy pairs" if summary["layout"] == "paired" else "noisy only"
    subsets = summary.get("subsets") or {}
    of = f" ({len(subsets)} subsets: {', '.join(subsets)})" if subsets else ""
    lines.append(
        f"## fsnet evaluation: {n} file(s), {secs:.1f} s ({layout}) from {summary['testset']}{of}"
    )
    model = summary["model"]
    lines.append(
        f"model: {summary['checkpoint_label']} ({model['num_parameters'] / 1e6:.2f} M parameters, "
        f"{model['norm']} norm, latency {model['latency_ms']:.1f} ms)"
    )
    for name, part in subsets.items():
        _mode_tables(
            lines,
            summary,
            part,
            f"{name} ({part['num_files']} file(s), {part['audio_seconds']:.1f} s), ",
        )
    _mode_tables(
        lines, summary, summary, f"all subsets ({n} file(s), {secs:.1f} s), " if subsets else ""
    )
    if "max_abs_diff" in summary:
        lines.append("")
        verdict = "agree" if summary["streaming_matches_offline"] else "DISAGREE"
        where = [k for k, part in subsets.items() if not part["streaming_matches_offline"]]
        lines.append(
            f"### offline vs streaming{', all subsets' if subsets else ''}: {verdict}"
            f"{' in ' + ', '.join(where) if where else ''} (largest per-file difference, "
            f"tolerance {summary['diff_tolerance']:g}; waveforms differ by at most "
            f"{summary['max_abs_sample_diff']:.1e})"
        )
        lines.append("")
        lines.append("| metric | offline | streaming | max diff |")
        lines.append("|---|---:|---:|---:|")
        off, st = summary["results"]["offline"], summary["results"]["streaming"]
        for name, d in summary["max_abs_diff"].items():
            lines.append(
                f"| {ROW_LABELS[name]} | {_fmt(off[name]['enhanced'])} | {_fmt(st[name]['enhanced'])} "
                f"| {_fmt_diff(d)} |"
            )
    lines.append("")
    lines.append(f"results: {summary['output_dir']}")
    return "\n".join(lines)


def _mode_tables(
    lines: list[str], summary: Mapping[str, Any], part: Mapping[str, Any], label: str
) -> None:
    """Append a heading (``### <label><mode>: RTF ...``) and a metric table per mode of ``part``
    (the summary itself, or one of its subsets) to ``lines``."""
    threads = summary["num_threads"]
    for mode, result in part["results"].items():
        rtf = part["rtf"][mode]
        how = f"{summary['stream_block_samples']}-sample blocks, " if mode == "streaming" else ""
        precision = summary.get("precision", "fp32")
        if mode == "offline" and precision.startswith("onnx"):
            precision = "fp32"  # the ONNX graphs are the streaming step; offline is PyTorch
        lines.append("")
        lines.append(
            f"### {label}{mode}: RTF {_fmt(rtf)} ({how}{summary['device']}, {precision}, "
            f"{threads} thread{'s' if threads != 1 else ''})"
        )
        lines.append("")
        lines.append("| metric | noisy | enhanced | improvement |")
        lines.append("|---|---:|---:|---:|")
        for name, r in result.items():
            lines.append(
                f"| {ROW_LABELS[name]} | {_fmt(r['noisy'])} | {_fmt(r['enhanced'])} "
                f"| {_fmt(r['improvement'], signed=True)} |"
            )


def _write_text(path: Path, text: str) -> None:
    from fsnet.files import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["file"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    _write_text(path, buf.getvalue())


def _plot(path: Path, title: str, panels: list[tuple[str, np.ndarray]]) -> None:
    """Spectrograms (dB, shared colour scale) of the given signals, one above the other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fsnet.files import atomic_write

    n_fft, hop = 512, 128
    window = np.hanning(n_fft + 1)[:-1]
    specs = []
    for _, x in panels:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < n_fft:
            x = np.pad(x, (0, n_fft - x.shape[0]))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * window
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        specs.append(10 * np.log10(power.T + 1e-10))
    vmax = max(float(s.max()) for s in specs)
    vmin = vmax - 80.0
    fig = Figure(figsize=(10, 2.4 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, (label, x), spec in zip(axes, panels, specs, strict=True):
        duration = len(x) / SAMPLE_RATE
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            extent=(0.0, duration, 0.0, SAMPLE_RATE / 2000.0),
            interpolation="nearest",
        )
        ax.set_ylabel("kHz")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=list(axes), label="dB")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# ----------------------------------------------------------------------------------- evaluate


def _mean(values: list[float]) -> tuple[float, int]:
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else math.nan), len(finite)


def _aggregate(
    files: list[int],
    results: Mapping[tuple[int, str], Mapping[str, float]],
    seconds: Mapping[str, list[float]],
    samples: list[int],
    sample_diffs: list[float],
    metric_names: tuple[str, ...],
    tolerance: float,
) -> dict[str, Any]:
    """The summary of the files with these indices: sizes, RTF, the mean metrics per mode and, for
    two modes, the largest offline/streaming differences."""
    modes = list(seconds)
    audio_seconds = sum(samples[i] for i in files) / SAMPLE_RATE
    enhancement_seconds = {m: sum(seconds[m][i] for i in files) for m in modes}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in modes:
        table[mode] = {}
        for name in metric_names:
            noisy_vals = [results[(i, "noisy")][name] for i in files]
            enh_vals = [results[(i, mode)][name] for i in files]
            noisy_mean, _ = _mean(noisy_vals)
            enh_mean, n_valid = _mean(enh_vals)
            gain, _ = _mean([e - nv for e, nv in zip(enh_vals, noisy_vals, strict=True)])
            table[mode][name] = {
                "noisy": noisy_mean,
                "enhanced": enh_mean,
                "improvement": gain,
                "num_files": n_valid,
            }
    out: dict[str, Any] = {
        "num_files": len(files),
        "audio_seconds": audio_seconds,
        "rtf": {m: enhancement_seconds[m] / max(audio_seconds, 1e-9) for m in modes},
        "enhancement_seconds": enhancement_seconds,
        "results": table,
    }
    if len(modes) == 2:
        diffs = {}
        for name in metric_names:
            worst = 0.0
            for i in files:
                a, b = results[(i, "offline")][name], results[(i, "streaming")][name]
                if math.isnan(a) and math.isnan(b):
                    continue
                d = abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf
                worst = max(worst, d)
            diffs[name] = worst
        out["max_abs_diff"] = diffs
        out["max_abs_sample_diff"] = max((sample_diffs[i] for i in files), default=0.0)
        out["diff_tolerance"] = tolerance
        out["streaming_matches_offline"] = all(d < tolerance for d in diffs.values())
    return out


def evaluate(cfg: Any = None) -> dict[str, Any]:
    """Run the evaluation described by ``cfg`` (keys of ``configs/evaluate.yaml``; a dict,
    DictConfig or None for the defaults) and return the summary that is also written as JSON.

    Raises ``FsnetError`` for anything the user can fix (paths, files, options, checkpoint).
    """
    import torch
    from tqdm import tqdm

    import fsnet
    from fsnet.audio import load_audio, write_audio
    from fsnet.streaming import StreamingEnhancer

    t_start = time.perf_counter()
    opts = _options(cfg)
    notices: list[str] = []

    def notice(msg: str) -> None:
        notices.append(msg)
        log.warning("notice: %s", msg)

    items, layout, scan_notices = scan_testset(opts.testset, opts.allow_unpaired)
    for msg in scan_notices:
        notice(msg)
    enhanced_names: list[str] = []
    plot_names: list[str] = []
    if opts.save_enhanced:
        enhanced_names, renamed = output_names(items, "enhanced")
        for msg in renamed:
            notice(msg)
    if opts.plot:
        plot_names, renamed = output_names(items, "plots")
        for msg in renamed:
            notice(msg)
    metric_names = opts.metrics
    if layout == "noisy_only":
        dropped = [n for n in metric_names if n not in M.DNSMOS_METRICS]
        metric_names = tuple(n for n in metric_names if n in M.DNSMOS_METRICS)
        if not metric_names:
            raise FsnetError(
                f"{opts.testset} has no clean references (no clean/ directory), so only DNSMOS can "
                "be computed, but metrics excludes it; add dnsmos to metrics"
            )
        if dropped:
            notice(f"no clean references: computing DNSMOS only (not {', '.join(dropped)})")

    model = _load_model(opts)
    modes = ["offline", "streaming"] if opts.mode == "both" else [opts.mode]
    autocast_dtype = torch.bfloat16 if opts.precision == "bf16" else None
    engine = (
        StreamingEnhancer(
            model, autocast_dtype=autocast_dtype, cuda_graphs=opts.device.startswith("cuda")
        )
        if "streaming" in modes and not opts.precision.startswith("onnx")
        else None
    )
    if "streaming" in modes and opts.precision.startswith("onnx"):
        import tempfile

        from fsnet.onnx_export import OnnxStreamingEnhancer, export_onnx

        int8 = opts.precision == "onnx-int8"
        with tempfile.TemporaryDirectory(prefix="fsnet_onnx_") as onnx_dir:
            export_onnx(model, onnx_dir, int8=int8)  # offline mode keeps the PyTorch fp32 model
            engine = OnnxStreamingEnhancer(
                onnx_dir,
                int8=int8,
                num_threads=opts.num_threads or os.cpu_count() or 1,
                model=model,
            )

    def enhance_offline(x: np.ndarray) -> np.ndarray:
        with torch.autocast(
            opts.device.split(":")[0], dtype=torch.bfloat16, enabled=autocast_dtype is not None
        ):
            return fsnet.enhance(model, x)

    out_dir = _output_dir(opts)
    out_dir.mkdir(parents=True, exist_ok=True)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(opts.num_threads or os.cpu_count() or 1)
    threads_used = torch.get_num_threads()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    executor = None
    try:
        # Warm-up outside the timing: first calls pay for lazy initialisation.
        warm = np.zeros(SAMPLE_RATE // 2, np.float32)
        if "offline" in modes:
            enhance_offline(warm)
        if engine is not None:
            enhance_streaming(engine, warm, opts.stream_block_samples)
        _sync(opts.device)

        # ---- phase 1: load + enhance (timed), save ----
        noisy_sig: list[np.ndarray] = []
        clean_sig: list[np.ndarray | None] = []
        enhanced: dict[str, list[np.ndarray]] = {m: [] for m in modes}
        seconds: dict[str, list[float]] = {m: [] for m in modes}
        sample_diffs: list[float] = []
        for index, item in enumerate(
            tqdm(items, desc="enhance", unit="file", disable=not opts.progress, file=sys.stderr)
        ):
            x, notes = load_audio(item.noisy, SAMPLE_RATE)
            for note in notes:
                notice(item.where(f"noisy/{note}" if layout == "paired" else note))
            ref = None
            if item.clean is not None:
                ref, notes = load_audio(item.clean, SAMPLE_RATE)
                for note in notes:
                    notice(item.where(f"clean/{note}"))
            for mode in modes:
                t0 = time.perf_counter()
                if mode == "offline":
                    y = enhance_offline(x)
                else:
                    y = enhance_streaming(engine, x, opts.stream_block_samples)
                _sync(opts.device)
                seconds[mode].append(time.perf_counter() - t0)
                y = np.asarray(y, dtype=np.float32)
                enhanced[mode].append(y)
                if opts.save_enhanced:
                    path = out_dir / f"enhanced_{mode}" / enhanced_names[index]
                    write_audio(path, y, SAMPLE_RATE)
            if len(modes) == 2:
                sample_diffs.append(
                    float(np.abs(enhanced["offline"][-1] - enhanced["streaming"][-1]).max())
                )
            if ref is not None and ref.shape[0] != x.shape[0]:
                n = min(ref.shape[0], x.shape[0])
                notice(
                    item.where(
                        f"{item.noisy.name} and {item.clean.name} differ in length ({x.shape[0]} "
                        f"vs {ref.shape[0]} samples); metrics use the first {n}"
                    )
                )
                ref = ref[:n]
            noisy_sig.append(x)
            clean_sig.append(ref)

        # ---- phase 2: metrics in worker processes ----
        signals = ["noisy", *modes]
        results: dict[tuple[int, str], dict[str, float]] = {}
        warned: list[str] = []
        tasks = []
        for i in range(len(items)):
            ref = clean_sig[i]
            n = ref.shape[0] if ref is not None else None
            for s in signals:
                sig = noisy_sig[i] if s == "noisy" else enhanced[s][i]
                tasks.append((i, s, sig[:n] if n is not None else sig, ref, metric_names))
        bar = tqdm(
            total=len(tasks),
            desc="metrics",
            unit="signal",
            disable=not opts.progress,
            file=sys.stderr,
        )

        def collect(result) -> None:
            i, s, values, messages = result
            results[(i, s)] = values
            for msg in messages:
                line = items[i].where(f"{items[i].name} ({s}): {msg}")
                warned.append(line)
                log.warning("warning: %s", line)
            bar.update(1)

        workers = min(opts.num_workers, len(tasks))
        if workers <= 0:
            for task in tasks:
                collect(_metric_task(*task))
        else:
            ctx = multiprocessing.get_context("spawn")
            executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_init_worker
            )
            pending = {executor.submit(_metric_task, *task) for task in tasks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    collect(fut.result())
            executor.shutdown()
            executor = None
        bar.close()

        # ---- aggregate ----
        samples = [x.shape[0] for x in noisy_sig]
        subsets: dict[str, list[int]] = {}  # subset -> indices of its files (subsets only)
        for i, item in enumerate(items):
            if item.subset:
                subsets.setdefault(item.subset, []).append(i)
        rows = []
        for i, item in enumerate(items):
            row: dict[str, Any] = {"subset": item.subset} if subsets else {}
            row["file"] = item.name
            row["clean"] = item.clean.name if item.clean else ""
            row["duration_s"] = samples[i] / SAMPLE_RATE
            for s in signals:
                for name in metric_names:
                    row[f"{s}_{name}"] = results[(i, s)].get(name, math.nan)
            for mode in modes:
                row[f"rtf_{mode}"] = seconds[mode][i] / max(row["duration_s"], 1e-9)
            rows.append(row)

        def aggregate(files: list[int]) -> dict[str, Any]:
            return _aggregate(
                files, results, seconds, samples, sample_diffs, metric_names, opts.diff_tolerance
            )

        overall = aggregate(list(range(len(items))))
        summary: dict[str, Any] = {
            "fsnet_version": fsnet.__version__,
            "testset": str(opts.testset),
            "layout": layout,
            "num_files": overall["num_files"],
            "audio_seconds": overall["audio_seconds"],
            "checkpoint": opts.checkpoint,
            "checkpoint_label": opts.checkpoint or "bundled pretrained model",
            "model": {
                "config": model.config.to_dict(),
                "norm": model.norm,
                "num_parameters": model.num_parameters,
                "latency_ms": model.config.latency_ms,
            },
            "mode": opts.mode,
            "device": opts.device,
            "num_threads": threads_used,
            "precision": opts.precision,
            "num_threads_setting": opts.num_threads,
            "stream_block_samples": opts.stream_block_samples,
            "metrics": list(metric_names),
        }
        # rtf, enhancement_seconds, results and the offline/streaming differences: of all files.
        summary.update((k, v) for k, v in overall.items() if k not in summary)
        if subsets:
            summary["subsets"] = {
                name: {"testset": str(opts.testset / name), **aggregate(files)}
                for name, files in subsets.items()
            }
        if len(modes) == 2 and not summary["streaming_matches_offline"]:
            bad = [n for n, d in summary["max_abs_diff"].items() if not d < opts.diff_tolerance]
            where = [
                n
                for n, r in summary.get("subsets", {}).items()
                if not r["streaming_matches_offline"]
            ]
            log.warning(
                "warning: offline and streaming metrics differ by more than %g on %s%s",
                opts.diff_tolerance,
                ", ".join(bad),
                f" (in {', '.join(where)})" if where else "",
            )

        # ---- outputs ----
        files: dict[str, Any] = {
            "per_file_csv": str(out_dir / "per_file.csv"),
            "summary_json": str(out_dir / "summary.json"),
            "summary_md": str(out_dir / "summary.md"),
        }
        if opts.save_enhanced:
            files["enhanced_dirs"] = {m: str(out_dir / f"enhanced_{m}") for m in modes}
        plots = []
        # The first `plot` files of the test set, or of each subset.
        for group in subsets.values() if subsets else [range(len(items))]:
            for i in group[: opts.plot]:
                panels = [(f"noisy: {items[i].noisy.name}", noisy_sig[i])]
                panels += [(f"enhanced ({m})", enhanced[m][i]) for m in modes]
                if clean_sig[i] is not None:
                    panels.append((f"clean: {items[i].clean.name}", clean_sig[i]))
                path = out_dir / "plots" / plot_names[i]
                _plot(path, items[i].where(items[i].key), panels)
                plots.append(str(path))
        if plots:
            files["plots"] = plots
        summary["output_dir"] = str(out_dir)
        summary["files"] = files
        summary["notices"] = notices
        summary["warnings"] = warned
        summary["elapsed_seconds"] = time.perf_counter() - t_start
        summary["table"] = format_tables(summary)
        _write_csv(out_dir / "per_file.csv", rows)
        _write_text(out_dir / "summary.md", summary["table"] + "\n")
        as_json = {k: v for k, v in summary.items() if k != "table"}
        _write_text(out_dir / "summary.json", json.dumps(_json_safe(as_json), indent=2) + "\n")
        return summary
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(previous_threads)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


# ------------------------------------------------------------------------------------- the CLI


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


_FAILURE: list[str] = []  # the task's one-line error, reported by main() after Hydra returns


def _log_to_files(message: str) -> None:
    """Write an ERROR record to the log files only (``<run dir>/evaluate.log``): main() prints
    the same line on the terminal, so the console handler must not print it a second time."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        logger = logger.parent if logger.propagate else None


def _hydra_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Errors are caught here rather than in main(): an exception leaving the task makes Hydra
    # print an extra "Error executing job with overrides" line first.
    try:
        values = _as_dict(cfg)
        raw = _raw_overrides(HydraConfig.get().overrides.task)
        for key in PATH_KEYS:
            if key in values:
                values[key] = _path_text(key, values[key], raw)
        with logging_redirect_tqdm():
            summary = evaluate(values)
    except (FsnetError, OSError) as exc:
        _FAILURE.append(_one_line(exc))
        _log_to_files(f"error: {_FAILURE[-1]}")
        return
    except KeyboardInterrupt:
        _log_to_files(f"error: {_INTERRUPTED}")
        raise
    print(summary["table"], flush=True)


_INTERRUPTED = "interrupted; only complete files were written"


def main() -> None:
    """Console entry point (``fsnet-evaluate`` / ``python evaluate.py``): Hydra overrides in argv.

    Every user-fixable problem (FsnetError, a bad Hydra override, an unreadable file) ends as a
    single ``error: ...`` line on stderr and exit status 1; Ctrl-C / SIGTERM exit with 130.
    """
    task = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=CONFIG_NAME)(
        _hydra_task
    )
    # Let Hydra's own errors reach us instead of being printed as multi-line reports.
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    code = 0
    _FAILURE.clear()
    try:
        task()
        if _FAILURE:
            print(f"error: {_FAILURE[0]}", file=sys.stderr)
            code = 1
    except FsnetError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        code = 1
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__
        fsnet_error = fsnet_cause(exc)  # e.g. output_dir is a file (hydra.run.dir resolver)
        if fsnet_error is not None:
            detail = _one_line(fsnet_error)
        else:
            detail = _one_line(exc)
            first = str(cause).split("\n")[0]
            if isinstance(cause, OmegaConfBaseException) and first not in detail:
                detail += " (" + " ".join(first.split()) + ")"
        print(f"error: {detail}", file=sys.stderr)
        code = 1
    except OSError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"error: {_INTERRUPTED}", file=sys.stderr)
        code = 130
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
