"""``python evaluate.py [key=value ...]`` (``fsnet-evaluate``): the Hydra command line.

Every user-fixable problem ends as one ``error: ...`` line on stderr with exit status 1 (through
:func:`fsnet.cli.run`); SIGINT / SIGTERM / SIGHUP stop the run between files with 130 / 143 / 129.
Plain overrides are composed once with Hydra's compose API before ``hydra.main`` runs, so a typo
is one line instead of Hydra's multi-line report. A run refused before it wrote anything leaves
no run folder behind (Hydra's ``evaluate.log`` and ``.hydra/`` would otherwise pile up).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsnet.cli import StopSignals, one_line, run
from fsnet.errors import FsnetError
from fsnet.evaluation.options import (
    CONFIG_DIR,
    CONFIG_NAME,
    PATH_KEYS,
    as_dict,
    path_text,
    raw_overrides,
)

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted; only complete files were written"


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (FsnetError, OSError, HydraException, OmegaConfBaseException)


def _probe_run_folder(folder: Path, top: Path | None) -> None:
    """Create the run folder and remove again what was created (``top`` and below), so that a
    folder that cannot be made (read-only, /proc, a permission) is one line here rather than
    Hydra's stack trace later."""
    if top is None:
        return
    problem = None
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        problem = exc.strerror or str(exc)
    for q in (folder, *folder.parents):  # also what a failed mkdir made before it failed
        with contextlib.suppress(OSError):
            q.rmdir()
        if q == top:
            break
    if problem is not None:
        raise FsnetError(f"cannot create the run folder {folder}: {problem}")


def preflight(overrides: list[str]) -> tuple[Path, Path | None]:
    """Compose the config once with Hydra's compose API and resolve its run folder; returns the
    folder and the outermost of it and its parents that does not exist yet (None if the folder
    exists), which is what a refused run may remove. Problems raise (bad keys, bad syntax, a
    file as ``output_dir``, a folder that cannot be written), before anything is written."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(
            config_dir=str(CONFIG_DIR), version_base="1.3", job_name=CONFIG_NAME
        ):
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
            folder = Path(str(cfg.hydra.run.dir)).expanduser().absolute()
    finally:
        GlobalHydra.instance().clear()
    missing = [q for q in (folder, *folder.parents) if not q.exists()]
    top = missing[-1] if missing else None
    _probe_run_folder(folder, top)
    return folder, top


def _log_to_files(message: str) -> None:
    """Write an ERROR record to the log files only (``<run dir>/evaluate.log``): the CLI prints
    the same line on the terminal, so the console handler must not print it a second time."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        logger = logger.parent if logger.propagate else None


def _remove_refused_run(run_dir: Path, job_name: str, snapshot: str | None, top: Path) -> bool:
    """Remove Hydra's start-up files (log, config snapshot) of a run folder this run created, and
    the folders this run created (up to ``top``) if nothing else is in them; False (nothing
    removed) if the run wrote anything else."""
    written = [run_dir / f"{job_name}.log"]
    snapshot_dir = run_dir / snapshot if snapshot else None
    if snapshot_dir is not None:
        written += [snapshot_dir / f"{name}.yaml" for name in ("config", "hydra", "overrides")]
    present = {p for p in run_dir.rglob("*") if not p.is_dir()}
    if present - set(written):
        return False
    for logger in (logging.getLogger(), *logging.Logger.manager.loggerDict.values()):
        for handler in list(getattr(logger, "handlers", ())):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) in written:
                handler.close()  # else the next record would create the file again
                logger.removeHandler(handler)
    for path in written:
        path.unlink(missing_ok=True)
    created = [p for p in run_dir.parents if p == top or top in p.parents]
    for folder in (snapshot_dir, run_dir, *created):
        if folder is not None:
            try:
                folder.rmdir()
            except OSError:  # not empty: a folder of the user's
                break
    return True


def _clean_refused_run(hydra_cfg: Any, folder: Path, top: Path | None) -> bool:
    """:func:`_remove_refused_run` of this run's folder if this run created it: ``folder`` and
    ``top`` as :func:`preflight` found them (a timestamped default folder may have moved on by
    a second since, and is new then too)."""
    run_dir = Path(hydra_cfg.runtime.output_dir).absolute()
    if run_dir == folder and top is None:
        return False  # the user's own folder, there before the run
    if top is None or not (top == run_dir or top in run_dir.parents):
        top = run_dir
    return _remove_refused_run(run_dir, hydra_cfg.job.name, hydra_cfg.output_subdir, top)


@dataclass
class _Outcome:
    """What the Hydra task hands back to :func:`main` (Hydra returns nothing of its own)."""

    table: str | None = None
    error: BaseException | None = None


def _task(
    cfg: Any, stop: StopSignals, outcome: _Outcome, checked: tuple[Path, Path | None] | None
) -> None:
    """The Hydra task. Errors are caught here rather than left to Hydra, which would print an
    extra "Error executing job" report first. ``checked``: what :func:`preflight` returned
    (None without preflight: nothing is removed)."""
    from hydra.core.hydra_config import HydraConfig
    from tqdm.contrib.logging import logging_redirect_tqdm

    from fsnet.evaluation.run import evaluate

    hydra_cfg = HydraConfig.get()
    try:
        values = as_dict(cfg)
        raw = raw_overrides(hydra_cfg.overrides.task)
        for key in PATH_KEYS:
            if key in values:
                values[key] = path_text(key, values[key], raw)
        with logging_redirect_tqdm():
            outcome.table = evaluate(values, stop)["table"]
    except (FsnetError, OSError, KeyboardInterrupt) as exc:
        # refused, or stopped, before anything was written: no folder of Hydra's start-up files
        removed = checked is not None and _clean_refused_run(hydra_cfg, *checked)
        stopped = isinstance(exc, KeyboardInterrupt)
        if not removed:
            _log_to_files(f"error: {INTERRUPTED if stopped else one_line(exc)}")
        if stopped:
            raise
        outcome.error = exc


def _evaluate_cli(args: list[str]) -> int:
    import hydra

    with StopSignals() as stop:
        checked = None
        # Hydra's own flags (--help, --cfg, -m) and HYDRA_FULL_ERROR=1 (debugging) go straight
        # to Hydra; plain overrides are checked first.
        if not any(a.startswith("-") for a in args) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            checked = preflight(args)
        stop.check()
        outcome = _Outcome()

        def task(cfg: Any) -> None:
            _task(cfg, stop, outcome, checked)

        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=CONFIG_NAME)(task)()
        if outcome.error is not None:
            raise outcome.error
        stop.check()
    if outcome.table is not None:
        print(outcome.table, flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``fsnet-evaluate`` / ``python evaluate.py``): Hydra overrides in argv."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = sys.argv[1:]
    code = run(lambda: _evaluate_cli(args), _user_errors(), INTERRUPTED)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
