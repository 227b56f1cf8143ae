"""One evaluation, as four steps: enhance -> score -> summarise -> write."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fsnet import metrics as M
from fsnet.cli import StopSignals
from fsnet.errors import FsnetError
from fsnet.evaluation import enhance, plots, report, scoring, summary
from fsnet.evaluation.options import Options, output_dir, parse_options
from fsnet.evaluation.testset import output_names, scan_testset

log = logging.getLogger(__name__)


class _Plan:
    """What a run will do, settled before the model is loaded: the files, their output names,
    the metrics, and the notices found so far (each also logged as it comes)."""

    def __init__(self, opts: Options) -> None:
        self.notices: list[str] = []
        self.items, self.layout, found = scan_testset(opts.testset, opts.allow_unpaired)
        for msg in found:
            self.notice(msg)
        self.enhanced_names = self._names(opts.save_enhanced, "enhanced")
        self.plot_names = self._names(bool(opts.plot), "plots")
        self.metric_names = self._metrics(opts)

    def notice(self, msg: str) -> None:
        self.notices.append(msg)
        log.warning("notice: %s", msg)

    def _names(self, wanted: bool, kind: str) -> list[str]:
        if not wanted:
            return []
        names, renamed = output_names(self.items, kind)
        for msg in renamed:
            self.notice(msg)
        return names

    def _metrics(self, opts: Options) -> tuple[str, ...]:
        """The metrics asked for, less the intrusive ones on a set without clean references."""
        if self.layout != "noisy_only":
            return opts.metrics
        dropped = [n for n in opts.metrics if n not in M.DNSMOS_METRICS]
        kept = tuple(n for n in opts.metrics if n in M.DNSMOS_METRICS)
        if not kept:
            raise FsnetError(
                f"{opts.testset} has no clean references (no clean/ directory), so only DNSMOS can "
                "be computed, but metrics excludes it; add dnsmos to metrics"
            )
        if dropped:
            self.notice(f"no clean references: computing DNSMOS only (not {', '.join(dropped)})")
        return kept


@contextlib.contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    """PyTorch's CPU threads set for the run (0 = all cores) and restored after it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate(cfg: Any = None, stop: StopSignals | None = None) -> dict[str, Any]:
    """Run the evaluation described by ``cfg`` (keys of ``configs/evaluate.yaml``; a dict,
    DictConfig or None for the defaults) and return the summary that is also written as JSON.

    Raises ``FsnetError`` for anything the user can fix (paths, files, options, checkpoint).
    SIGINT, SIGTERM and SIGHUP are recorded by ``stop`` (one is entered for the call if none is
    given) and end the run between files with :class:`fsnet.cli.Stopped`; every file written by
    then is complete, and the summary files are not written.
    """
    if stop is None:
        with StopSignals() as own:
            return evaluate(cfg, own)
    t_start = time.perf_counter()
    opts = parse_options(cfg)
    plan = _Plan(opts)
    model = enhance.load_model(opts, plan.notice)
    run = enhance.enhancers(model, opts)
    out_dir = output_dir(opts)
    out_dir.mkdir(parents=True, exist_ok=True)
    stop.check()
    with _torch_threads(opts.num_threads):
        enhanced = _enhance(opts, plan, run, out_dir, stop)
        results, warned = scoring.score(
            plan.items, enhanced, plan.metric_names, opts.num_workers, opts.progress, stop
        )
        result = summary.summarise(
            opts, plan.items, plan.layout, model, results, enhanced, plan.metric_names
        )
        rows = summary.per_file_rows(plan.items, results, enhanced, plan.metric_names)
    result["output_dir"] = str(out_dir)
    result["files"] = _write_plots(opts, plan, enhanced, out_dir, stop)
    result["notices"] = plan.notices
    result["warnings"] = warned
    result["elapsed_seconds"] = time.perf_counter() - t_start
    result["table"] = report.format_tables(result)
    stop.check()  # the last point to stop: the three result files are written together
    report.write_results(out_dir, result, rows)
    return result


def _enhance(
    opts: Options, plan: _Plan, run: dict, out_dir: Path, stop: StopSignals
) -> enhance.Enhanced:
    save_dirs = {m: out_dir / f"enhanced_{m}" for m in run} if opts.save_enhanced else None
    return enhance.enhance_all(
        plan.items,
        plan.layout == "paired",
        run,
        opts,
        plan.notice,
        stop,
        save_dirs=save_dirs,
        save_names=plan.enhanced_names,
    )


def _write_plots(
    opts: Options, plan: _Plan, enhanced: enhance.Enhanced, out_dir: Path, stop: StopSignals
) -> dict[str, Any]:
    """Draw the plots; the ``files`` entry of the summary (result files, folders, plots)."""
    files: dict[str, Any] = {
        "per_file_csv": str(out_dir / "per_file.csv"),
        "summary_json": str(out_dir / "summary.json"),
        "summary_md": str(out_dir / "summary.md"),
    }
    if opts.save_enhanced:
        files["enhanced_dirs"] = {m: str(out_dir / f"enhanced_{m}") for m in opts.modes}
    subsets = summary.subsets_of(plan.items)
    groups = list(subsets.values()) if subsets else [list(range(len(plan.items)))]
    written = plots.write_plots(
        out_dir / "plots", plan.items, plan.plot_names, enhanced, groups, opts.plot, stop
    )
    if written:
        files["plots"] = written
    return files
