"""Evaluate a model on a test set: PESQ, STOI, SI-SDR, DNSMOS and the real-time factor.

``python evaluate.py checkpoint=PATH testset=DIR mode=offline|streaming|both`` (Hydra CLI, see
``configs/evaluate.yaml``); ``fsnet.evaluation.evaluate(cfg)`` from Python. One run is four steps:

- :mod:`~fsnet.evaluation.testset` finds the files and pairs noisy with clean
  (:func:`fsnet.audio.fileid`); :mod:`~fsnet.evaluation.options` checks the options;
- :mod:`~fsnet.evaluation.enhance` enhances every file in this process (what the real-time
  factor measures); :mod:`~fsnet.evaluation.scoring` computes the metrics in worker processes;
- :mod:`~fsnet.evaluation.summary` averages them per mode (and per subset);
- :mod:`~fsnet.evaluation.report` and :mod:`~fsnet.evaluation.plots` write ``per_file.csv``,
  ``summary.json``, ``summary.md`` and spectrograms; enhanced audio is written as it is made.

:mod:`~fsnet.evaluation.run` strings them together and :mod:`~fsnet.evaluation.cli` is the
command line. A Markdown table goes to stdout; notices and progress go to stderr.
"""

from __future__ import annotations

from typing import Any


def evaluate(cfg: Any = None, stop: Any = None) -> dict[str, Any]:
    """:func:`fsnet.evaluation.run.evaluate` (imported on use: metric workers import this package
    and need none of the enhancement side)."""
    from fsnet.evaluation.run import evaluate as run_evaluation

    return run_evaluation(cfg, stop)


__all__ = ["evaluate"]
