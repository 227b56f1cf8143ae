"""The one way an fsnet command line ends: its result, or one ``error: ...`` line and a status.

Every entry point (``train.py``, ``evaluate.py``, ``stream_infer.py``, ``python -m
fsnet.checkpoint``, ``python -m fsnet.onnx_export``) runs its work through :func:`run`, so the
promise of docs/reliability.md is kept in one place:

- a problem the user can fix (:class:`~fsnet.errors.FsnetError`, and whatever else the command
  names as such) prints one line and exits 1; ``FSNET_TRACEBACK=1`` re-raises it instead;
- a stop by signal exits ``128 + signal``: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.

:class:`StopSignals` is how long-running loops are stopped: its handlers only record the signal,
and the loop asks :meth:`StopSignals.check` between blocks. No handler ever raises inside native
code (a KeyboardInterrupt raised while torch runs a kernel or packs weights can corrupt its
state), so the loop finishes its files as on a normal end of input.
Even a handler that only sets a flag is too much around torch's oneDNN-packed LSTM step: a
Python handler run on the main thread in the middle of it (a do-nothing builtin will do) can
corrupt the heap (glibc aborts, segfaults; a C-level handler in the same place does not).
``StopSignals(blocked=True)`` therefore keeps the signals pending instead of delivered and asks
the kernel for them at the loop's safe points; with :func:`block_stop_signals` called before the
first import that starts threads, no Python handler runs while torch works.
Standard library only: every entry point imports this first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from fsnet.errors import FsnetError, fsnet_cause

EXIT_ERROR = 1
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 128 + its number."""
    return 128 + int(signum)


class Stopped(KeyboardInterrupt):
    """Raised at a safe point after a stop signal; carries the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def block_stop_signals() -> None:
    """Keep SIGINT/SIGTERM/SIGHUP pending in this thread and in every thread it starts later.

    Call it first thing in a script, before imports that start threads (numpy's BLAS, torch's
    pool): a signal that some thread does not block is delivered there, and Python then runs its
    handler on the main thread wherever that happens to be. Then :class:`StopSignals` with
    ``blocked=True`` collects the signals at its safe points. No-op where the platform has no
    signal masks.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, watched_signals())


def watched_signals() -> set[int]:
    """The stop signals this process reacts to: those not ignored when it started. ``nohup``
    ignores SIGHUP, a non-interactive shell ignores SIGINT in its background jobs: such a job
    must go on through them, as it would without fsnet's handlers."""
    return {s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP recorded by a flag instead of raised where they land.

    Use as a context manager around the work; inside, :meth:`check` raises :class:`Stopped` if a
    signal came (one that was ignored when the process started stays ignored: see
    :func:`watched_signals`), :attr:`requested` says whether one did, and :meth:`wait` sleeps until one comes.
    :attr:`event` is set once a signal has been seen, for threads that wait on it. The first
    signal wins the exit status; later ones are only noted. Off the main thread (where Python
    cannot install handlers) it is a plain flag that nobody sets.

    ``blocked=True`` (see the module docstring) also blocks the signals in this thread for the
    duration: they stay pending, and ``requested`` / ``check`` / ``wait`` take them from the
    kernel, so no handler runs in between. A signal delivered to a thread that does not block it
    still reaches the flag through the handlers. On leaving, signals still pending are taken
    (they would otherwise be delivered, or kill the process, later) and the mask is restored.
    """

    def __init__(self, blocked: bool = False) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._blocked = blocked and hasattr(signal, "pthread_sigmask")
        self._mask: set[int] | None = None  # the mask to restore, while blocking
        self._signals: set[int] = set()  # the signals handled (see watched_signals)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._signals = watched_signals()
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._record)
            if self._blocked:
                self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._signals)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._mask is not None:
            self._take_pending()
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self._mask = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _take_pending(self) -> None:
        """Record (and consume) the stop signals waiting in the kernel."""
        if self._mask is None:
            return
        while self._signals & signal.sigpending():
            info = signal.sigtimedwait(self._signals, 0)
            if info is None:  # taken by another thread meanwhile
                break
            self._record(info.si_signo, None)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until a stop signal comes; whether one has come."""
        if self._mask is None:
            return self.event.wait(seconds)
        if not self.requested:
            info = signal.sigtimedwait(self._signals, max(0.0, seconds))
            if info is not None:
                self._record(info.si_signo, None)
        return self.requested

    def _record(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.signum is None:
            self.signum = signum
        self.event.set()

    @property
    def requested(self) -> bool:
        self._take_pending()
        return self.event.is_set()

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop signal has arrived."""
        self._take_pending()
        if self.signum is not None:
            raise Stopped(self.signum)


def _squash(text: str) -> str:
    """Join lines; drop Hydra's search-path tail and OmegaConf's ``full_key:`` detail lines."""
    text = text.split("Config search path:")[0]
    keep = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.strip().startswith(("full_key:", "object_type=", "reference_type="))
    ]
    return " ".join(" ".join(keep).split())


def one_line(exc: BaseException) -> str:
    """A readable single line for ``exc``: an FsnetError anywhere in its chain speaks for itself
    (Hydra's "Error in call to target" adds nothing); a DataLoader worker's re-raised error keeps
    the original message; otherwise up to three distinct messages of the chain, joined."""
    cause = fsnet_cause(exc)
    if cause is not None and cause is not exc:
        return _squash(str(cause))
    message = str(exc)
    if "Original Traceback" in message:
        lines = [line for line in message.splitlines() if line.strip()]
        message = lines[-1] if lines else message
        for prefix in ("fsnet.errors.FsnetError: ", "FsnetError: "):
            message = message.removeprefix(prefix)
    parts = [_squash(message)]
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    seen = {id(exc)}
    while cause is not None and id(cause) not in seen and len(parts) < 3:
        seen.add(id(cause))
        text = _squash(str(cause))
        if text and text not in parts[-1]:
            parts.append(text)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    line = ": ".join(p for p in parts if p)
    return line or type(exc).__name__


def print_error(message: str) -> int:
    """Print ``error: message`` on stderr; return the error exit status."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def run(
    work: Callable[[], int | None],
    user_errors: tuple[type[BaseException], ...] = (FsnetError,),
    interrupted: str = "interrupted",
) -> int:
    """Run a command's ``work`` and turn how it ended into an exit status.

    ``user_errors`` are the exception types that mean "the user can fix this" (always including
    FsnetError); ``interrupted`` is the line printed when a stop signal or Ctrl-C ended the work
    before it could report for itself.
    """
    try:
        return int(work() or 0)
    except (FsnetError, *user_errors) as exc:
        if os.environ.get("FSNET_TRACEBACK") == "1":
            raise
        return print_error(one_line(exc))
    except Stopped as exc:
        print_error(interrupted)
        return exit_status(exc.signum)
    except KeyboardInterrupt:
        print_error(interrupted)
        return exit_status(signal.SIGINT)
