"""The options of an evaluation (``configs/evaluate.yaml``), checked into an :class:`Options`.

Also the Hydra details that concern those keys: path keys keep the text that was typed (Hydra
reads ``testset=2024`` as an int), and ``hydra.run.dir`` follows ``output_dir`` when it is given.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fsnet import metrics as M
from fsnet.errors import FsnetError
from fsnet.evaluation.testset import DEFAULT_TESTSET, REPO_ROOT
from fsnet.frontend import MaskShaping

CONFIG_DIR = REPO_ROOT / "configs"
CONFIG_NAME = "evaluate"
MODES = ("offline", "streaming", "both")
PRECISIONS = ("fp32", "int8", "int8-dynamic", "bf16", "onnx", "onnx-int8")

# Keys whose value is a path. Hydra parses ``testset=2024`` as an int and ``output_dir=2024.10`` as
# the float 2024.1, so for these keys the text typed on the command line is used instead.
PATH_KEYS = ("checkpoint", "testset", "output_dir")


def raw_overrides(task_overrides: Any) -> dict[str, str]:
    """``{key: text after '='}`` of the command-line overrides (``key=v``, ``+key=v``, ``++key=v``)."""
    raw: dict[str, str] = {}
    for line in task_overrides or ():
        key, sep, text = str(line).lstrip("+").partition("=")
        if sep:
            raw[key.strip()] = text.strip()
    return raw


def path_text(key: str, value: Any, raw: Mapping[str, str]) -> Any:
    """A path key's value as text: the typed text for a value Hydra read as a number or boolean."""
    if isinstance(value, (bool, int, float)):
        return raw.get(key, str(value))
    return value


def check_output_dir(path: Path) -> None:
    """Refuse an ``output_dir`` that is a file or lies below one."""
    for q in (path, *path.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == path else f" ({q} is a file)"
                raise FsnetError(f"output_dir {path} is not a directory{where}")
            return


def first_set(value: Any, default: Any, *, _root_: Any = None) -> Any:
    """hydra.run.dir: ``output_dir`` (as typed, ``~`` expanded) when given, else ``default``."""
    if value is None or not isinstance(value, (str, bool, int, float)) or not str(value).strip():
        return default  # a list/dict output_dir is rejected with a one-line error by the options
    overrides = OmegaConf.select(_root_, "hydra.overrides.task") if _root_ is not None else None
    path = Path(str(path_text("output_dir", value, raw_overrides(overrides)))).expanduser()
    check_output_dir(path)  # else Hydra fails with a bare "[Errno 17] File exists: ..."
    return str(path)


# hydra.run.dir in evaluate.yaml: ``output_dir`` when given, else a timestamped default.
if not OmegaConf.has_resolver("fsnet.first_set"):
    OmegaConf.register_new_resolver("fsnet.first_set", first_set)


@functools.cache
def _defaults() -> Mapping[str, Any]:
    path = CONFIG_DIR / f"{CONFIG_NAME}.yaml"
    if not path.is_file():
        raise FsnetError(f"config file not found: {path}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cfg.pop("hydra", None)
    cfg.pop("defaults", None)
    return cfg


def default_config() -> dict[str, Any]:
    """The keys of ``configs/evaluate.yaml`` (without the ``hydra`` node) as a plain dict."""
    return dict(_defaults())


def as_dict(cfg: Any) -> dict[str, Any]:
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
    shaping: MaskShaping  # postfilter / atten_lim_db: the noise-suppression strength

    @property
    def modes(self) -> list[str]:
        """The enhancement modes run: ``mode``, with ``both`` as offline then streaming."""
        return ["offline", "streaming"] if self.mode == "both" else [self.mode]


class _Checked:
    """The given values over the defaults, read key by key; every problem is collected so that
    one error names them all."""

    def __init__(self, cfg: Any) -> None:
        self.values = default_config()
        given = as_dict(cfg)
        given.pop("hydra", None)
        unknown = sorted(set(given) - set(self.values))
        if unknown:
            raise FsnetError(f"unknown evaluate option(s) {unknown}; known: {sorted(self.values)}")
        self.values.update(given)
        self.problems: list[str] = []

    def integer(self, key: str, minimum: int) -> int:
        v = self.values[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            self.problems.append(f"{key} must be an integer >= {minimum}, got {v!r}")
            return minimum
        return v

    def boolean(self, key: str) -> bool:
        v = self.values[key]
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        if not isinstance(v, bool):
            self.problems.append(f"{key} must be true or false, got {v!r}")
            return False
        return v

    def path(self, key: str) -> str | None:
        v = self.values[key]
        if v is None:
            return None
        if isinstance(v, str) and not v.strip():
            # most often an unset shell variable (testset=$DIR): scoring the default instead
            # would look like an answer about the folder the user meant
            self.problems.append(
                f"{key}= is empty; give a path, or leave {key} out for its default"
            )
            return None
        if isinstance(v, (str, bool, int, float)):
            return str(v)
        kind = "a list" if isinstance(v, (list, tuple)) else type(v).__name__
        self.problems.append(f"{key} must be a path (or null), got {kind}: {v!r}")
        return None

    def workers(self) -> int:
        workers = self.values["num_workers"]
        if workers is None:
            return os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            self.problems.append(f"num_workers must be null or an integer >= 0, got {workers!r}")
            return 0
        return workers

    def metric_names(self) -> tuple[str, ...]:
        names = self.values["metrics"]
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if names is not None and (
            not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)
        ):
            self.problems.append(
                f"metrics must be a list of metric names, e.g. [pesq_wb,stoi], got {names!r}"
            )
            return ()
        try:
            metric_names = M.expand_metric_names(names or [])
        except ValueError as exc:
            self.problems.append(str(exc))
            return ()
        if not metric_names and not self.problems:
            self.problems.append("metrics is empty: nothing to compute")
        return metric_names

    def tolerance(self) -> float:
        tol = self.values["diff_tolerance"]
        try:
            tol = float(tol) if not isinstance(tol, bool) else math.nan
        except (TypeError, ValueError):
            tol = math.nan
        if not (math.isfinite(tol) and tol >= 0):
            self.problems.append(
                f"diff_tolerance must be a number >= 0, got {self.values['diff_tolerance']!r}"
            )
            return 1e-3
        return tol

    def shaping(self) -> MaskShaping:
        try:
            return MaskShaping(self.values["postfilter"], self.values["atten_lim_db"])
        except FsnetError as exc:  # its message names the key(s): postfilter, atten_lim_db
            self.problems.append(str(exc))
            return MaskShaping()

    def device(self) -> str:
        device = str(self.values["device"])
        if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
            self.problems.append(f"device must be cpu or cuda (or cuda:N), got {device!r}")
        return device

    def precision(self, mode: str, device: str) -> str:
        precision = str(self.values["precision"])
        if precision not in PRECISIONS:
            self.problems.append(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        elif precision in ("int8", "int8-dynamic", "onnx", "onnx-int8") and device != "cpu":
            self.problems.append(f"precision={precision} is a CPU path; use device=cpu")
        elif precision.startswith("onnx") and mode == "offline":
            self.problems.append(
                f"precision={precision} is a streaming engine; use mode=streaming or both"
            )
        elif precision == "bf16" and device == "cpu":
            self.problems.append("precision=bf16 is the GPU path; use device=cuda")
        return precision


def parse_options(cfg: Any) -> Options:
    """Check ``cfg`` (keys of ``configs/evaluate.yaml``: a dict, DictConfig or None for the
    defaults) into :class:`Options`; every problem found is named in one ``FsnetError``."""
    c = _Checked(cfg)
    mode = str(c.values["mode"])
    if mode not in MODES:
        c.problems.append(f"mode must be one of {'|'.join(MODES)}, got {mode!r}")
    allow_unpaired, save_enhanced = c.boolean("allow_unpaired"), c.boolean("save_enhanced")
    progress = c.boolean("progress")
    testset, checkpoint, out = c.path("testset"), c.path("checkpoint"), c.path("output_dir")
    block, threads = c.integer("stream_block_samples", 1), c.integer("num_threads", 0)
    plot, workers, device = c.integer("plot", 0), c.workers(), c.device()
    norm = c.values.get("norm")
    if norm not in (None, "cumulative", "utterance"):
        c.problems.append(f"norm must be null, cumulative or utterance, got {norm!r}")
    metric_names, tol = c.metric_names(), c.tolerance()
    precision, shaping = c.precision(mode, device), c.shaping()
    if c.problems:
        raise FsnetError("; ".join(c.problems))
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
        shaping=shaping,
    )


def output_dir(opts: Options) -> Path:
    """Where the results go: ``output_dir``, else the Hydra run folder, else a timestamped
    folder under ``./outputs/evaluate`` (the API without Hydra)."""
    if opts.output_dir is not None:
        check_output_dir(opts.output_dir)
        return opts.output_dir.resolve()
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir).resolve()
    except (ImportError, ValueError):
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return (Path.cwd() / "outputs" / "evaluate" / stamp).resolve()
