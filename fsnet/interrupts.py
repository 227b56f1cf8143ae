"""Ctrl-C held back over short sections that must not be cut in the middle.

- Imports of C++ extensions: a SIGINT while torch (or another pybind11 extension) is being
  imported can make Python's handler raise KeyboardInterrupt inside C++ code that cannot pass it
  on, and the process aborts with ``terminate called after throwing an instance of
  'pybind11::error_already_set'`` (exit -6, no cleanup, no one-line message).
- Hydra's ``instantiate``: OmegaConf stopped while it sets a node's flags leaves the node broken,
  and the interrupt surfaces as an unrelated internal error.
- Writing a run's release file and summary (``fsnet.train``).

Under :func:`sigint_held` the handler only records the signal; it is raised again, as an ordinary
KeyboardInterrupt, right after the section. Standard library only: ``fsnet/__init__.py`` imports
this before anything heavy.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigint_held() -> Iterator[None]:
    """Inside the block a Ctrl-C is only noted; on leaving, it is delivered to the previous handler.

    Python runs signal handlers on the main thread only (whichever thread the OS picked), so this
    holds the signal whatever threads exist. Off the main thread, or when SIGINT's handler was not
    installed from Python (so it could not be put back), it does nothing.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is None
    ):
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # now handled as it would have been
