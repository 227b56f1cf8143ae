#!/usr/bin/env python3
"""Real-time speech enhancement from a microphone or a file; see ``--help`` and docs/realtime.md."""

import signal
import sys

if __name__ == "__main__":
    # Before any import starts a thread: Ctrl-C, SIGTERM and SIGHUP then stay pending until the
    # tool asks for them between blocks (see fsnet.cli), in every thread numpy and torch start.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    from fsnet.live.cli import main

    sys.exit(main())
