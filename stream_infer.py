#!/usr/bin/env python3
"""Real-time speech enhancement from a microphone or a file; see ``--help`` and docs/realtime.md."""

import signal
import sys

if __name__ == "__main__":
    # Before any import starts a thread: Ctrl-C, SIGTERM and SIGHUP then stay pending until the
    # tool asks for them between blocks (see fsnet.cli), in every thread numpy and torch start.
    # Those ignored at start (nohup, background jobs) stay ignored.
    if hasattr(signal, "pthread_sigmask"):
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        signal.pthread_sigmask(
            signal.SIG_BLOCK, {s for s in stops if signal.getsignal(s) is not signal.SIG_IGN}
        )
    from fsnet.live.cli import main

    sys.exit(main())
