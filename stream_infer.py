#!/usr/bin/env python3
"""Real-time speech enhancement from a microphone or a file; see ``--help`` and docs/realtime.md."""

import sys

from fsnet.live import main

if __name__ == "__main__":
    sys.exit(main())
