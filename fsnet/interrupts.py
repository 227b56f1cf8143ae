"""Ctrl-C and SIGTERM held back over short sections that must not be cut in the middle.

- Imports of C++ extensions: a signal whose Python handler raises (KeyboardInterrupt, or the
  SIGTERM handlers of evaluate.py and Lightning) while torch or another pybind11 extension is
  being imported can raise inside C++ code that cannot pass it on, and the process aborts with
  ``terminate called after throwing an instance of 'pybind11::error_already_set'`` (exit -6, no
  cleanup, no one-line message).
- Hydra's ``instantiate``: OmegaConf stopped while it sets a node's flags leaves the node broken,
  and the interrupt surfaces as an unrelated internal error.
- Writing a run's release file and summary (``fsnet.train``), so a stopped run has both.

Under :func:`interrupts_held` the handlers only record the signals; each is raised again, to the
handler that was there before (KeyboardInterrupt, a tool's own handler, or the default action),
right after the section. Standard library only: ``fsnet/__init__.py`` imports this before
anything heavy.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # both exist on every platform Python runs on


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Inside the block SIGINT/SIGTERM are only noted; on leaving, each goes to its old handler.

    Python runs signal handlers on the main thread only (whichever thread the OS picked), so this
    holds the signals whatever threads exist. Off the main thread it does nothing; a signal whose
    handler was not installed from Python (so could not be put back) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in HELD_SIGNALS:
        if signal.getsignal(signum) is not None:
            previous[signum] = signal.signal(signum, lambda s, frame: held.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):  # once each, in arrival order
            signal.raise_signal(signum)  # now handled as it would have been
