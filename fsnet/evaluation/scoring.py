"""The scoring step of an evaluation: every metric of every signal (noisy input, each mode's
enhancement) of every file, in worker processes (or in this one with ``num_workers=0``).

A stop signal is only recorded (:class:`fsnet.cli.StopSignals`); the loop that collects results
sees it within :data:`POLL_SECONDS`, kills the workers (a DNSMOS call on a long file takes tens
of seconds and cannot be cut short any other way) and raises :class:`fsnet.cli.Stopped`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np

from fsnet import metrics as M
from fsnet.cli import StopSignals
from fsnet.evaluation.enhance import Enhanced
from fsnet.evaluation.testset import Item

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often the collecting loop looks at the stop flag
# (file index, signal name) -> {metric: value}; signal is "noisy" or a mode
Results = dict[tuple[int, str], dict[str, float]]
Task = tuple[int, str, np.ndarray, "np.ndarray | None", tuple[str, ...]]


def _init_worker() -> None:
    # A terminal's Ctrl-C (or hang-up) goes to the whole process group: the main process decides,
    # and ends the workers itself (SIGKILL); a SIGTERM to the whole group ends them too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    M.set_dnsmos_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def metric_task(
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


def tasks(enhanced: Enhanced, metric_names: tuple[str, ...]) -> list[Task]:
    """One task per file and signal (noisy, then each mode), cut to the reference's length."""
    out = []
    for i, ref in enumerate(enhanced.clean):
        n = ref.shape[0] if ref is not None else None
        for s in ("noisy", *enhanced.outputs):
            sig = enhanced.noisy[i] if s == "noisy" else enhanced.outputs[s][i]
            out.append((i, s, sig[:n] if n is not None else sig, ref, metric_names))
    return out


def _terminate(executor: ProcessPoolExecutor) -> None:
    """End the pool now: queued tasks are dropped and running ones killed (shutdown() alone
    waits for every task already handed to a worker, and the interpreter's exit waits too).

    SIGKILL, not SIGTERM: a worker still importing torch holds SIGTERM back until the import is
    done (fsnet.interrupts), and a worker has nothing to save. Python 3.14 has
    ``executor.kill_workers()``; before it the pool's process table is the only handle.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=5)


def _in_workers(
    todo: list[Task], workers: int, collect: Callable[[tuple], None], stop: StopSignals
) -> None:
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    )
    try:
        pending: set[Future] = {executor.submit(metric_task, *task) for task in todo}
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            stop.check()  # before results: a group SIGTERM also kills the workers (broken pool)
            for fut in done:
                collect(fut.result())
    except BaseException:
        _terminate(executor)
        raise
    executor.shutdown()


def score(
    items: list[Item],
    enhanced: Enhanced,
    metric_names: tuple[str, ...],
    num_workers: int,
    progress: bool,
    stop: StopSignals,
) -> tuple[Results, list[str]]:
    """``(results, warnings)``: the metrics of every file and signal, and one line per metric
    warning (also logged), naming the file and signal."""
    from tqdm import tqdm

    todo = tasks(enhanced, metric_names)
    results: Results = {}
    warned: list[str] = []
    bar = tqdm(
        total=len(todo), desc="metrics", unit="signal", disable=not progress, file=sys.stderr
    )

    def collect(result: tuple) -> None:
        i, s, values, messages = result
        results[(i, s)] = values
        for msg in messages:
            line = items[i].where(f"{items[i].name} ({s}): {msg}")
            warned.append(line)
            log.warning("warning: %s", line)
        bar.update(1)

    workers = min(num_workers, len(todo))
    try:
        if workers <= 0:
            for task in todo:
                stop.check()
                collect(metric_task(*task))
        else:
            _in_workers(todo, workers, collect, stop)
    finally:
        bar.close()
    return results, warned
