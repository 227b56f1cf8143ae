#!/usr/bin/env python3
"""Real-time speech enhancement from a microphone or a file; see ``--help`` and docs/realtime.md."""

import sys

try:
    from fsnet.live import main
except KeyboardInterrupt:  # Ctrl-C while torch loads: nothing started, nothing to write
    print("error: interrupted before start", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
