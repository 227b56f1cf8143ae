"""``python train.py [overrides]``: the Hydra command line around :func:`fsnet.train.run.train`.

It ends through :func:`fsnet.cli.run`: a problem the user can fix is one ``error: ...`` line and
exit status 1 (``HYDRA_FULL_ERROR=1`` shows Hydra's full traceback instead); a run stopped by
Ctrl-C or SIGTERM exits 130 or 143 once its files are written.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsnet.cli import exit_status, print_error
from fsnet.cli import run as run_command
from fsnet.train.checks import CONFIG_DIR, CONFIG_NAME, _user_errors, preflight
from fsnet.train.run import build, finish, fit


@dataclass
class _Outcome:
    """How the Hydra task ended, handed back out of ``hydra.main`` (which returns nothing)."""

    fit_started: bool = False  # before that, a refused run has written nothing worth keeping
    error: BaseException | None = None
    status: int = 0


def _task(cfg: Any, outcome: _Outcome) -> None:
    """The Hydra task: build, fit, finish. A user error is kept for :func:`fsnet.cli.run` to
    report (Hydra would print its own traceback); a stop becomes its exit status."""
    try:
        run = build(cfg)
    except _user_errors() as exc:
        _remove_empty_run_folder()
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        outcome.error = exc
        return
    except KeyboardInterrupt:  # Ctrl-C before fit(): nothing of the run to keep either
        _remove_empty_run_folder()
        raise
    outcome.fit_started = True  # from here on the run folder may hold its logs and checkpoints
    try:
        summary = finish(run, fit(run))
    except _user_errors() as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        outcome.error = exc
        return
    if summary["stopped_by"] is not None:
        outcome.status = exit_status(getattr(signal, summary["stopped_by"]))


def _remove_empty_run_folder() -> None:
    """A run refused before fit() leaves only what Hydra wrote: its config snapshot and a log of
    start-up lines (the error itself goes to stderr). Remove those files, then the folders if they
    are empty, so failed attempts do not pile up beside real runs; anything else in the folder
    (the user's own files, a redirected console log) keeps it."""
    from hydra.core.hydra_config import HydraConfig

    if (
        int(os.environ.get("LOCAL_RANK", "0")) > 0
        or os.environ.get("HYDRA_FULL_ERROR") == "1"  # debugging: keep everything
    ):
        return
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not under hydra.main (the API)
        return
    run_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    if run_dir == Path.cwd().resolve():
        return
    logging.shutdown()  # closes the log file before it is removed
    snapshot = run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None
    written = [run_dir / f"{hydra_cfg.job.name}.log"]
    if snapshot is not None:
        written += [snapshot / f"{name}.yaml" for name in ("config", "hydra", "overrides")]
    for path in written:
        path.unlink(missing_ok=True)
    for folder in (snapshot, run_dir):
        if folder is not None:
            try:
                folder.rmdir()
            except OSError:  # not empty: something else lives there
                return


def _command(args: list[str], outcome: _Outcome) -> int:
    try:
        return _hydra_run(args, outcome)
    except KeyboardInterrupt:
        # fit() takes over its own interrupts (it saves last.ckpt and exits 130); one that
        # arrives while the results are written is held until they are complete.
        when = (
            "after training; its files were written first"
            if outcome.fit_started
            else "before training started"
        )
        print_error(f"interrupted {when}")
        return exit_status(signal.SIGINT)


def _hydra_run(args: list[str], outcome: _Outcome) -> int:
    import hydra

    # Hydra's own flags (--cfg, --help, -m, ...) go straight to Hydra; plain overrides are checked
    # first so that a typo or an unwritable run folder gives one line instead of Hydra's report.
    if not any(a.startswith("-") for a in args) and os.environ.get("HYDRA_FULL_ERROR") != "1":
        problem = preflight(args)
        if problem:
            return print_error(problem)
    entry = hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")(
        lambda cfg: _task(cfg, outcome)
    )
    entry()
    if outcome.error is not None:
        raise outcome.error
    return outcome.status


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python train.py [group=option] [key=value] ...`` (Hydra syntax); returns
    the exit status (0, 1 for an error, 130 / 143 for a run stopped by SIGINT / SIGTERM)."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    outcome = _Outcome()
    return run_command(lambda: _command(sys.argv[1:], outcome), _user_errors())
