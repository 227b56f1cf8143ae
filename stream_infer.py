#!/usr/bin/env python3
"""Real-time speech enhancement from a microphone or a file; see ``--help`` and docs/realtime.md."""

import sys

if __name__ == "__main__":
    try:
        from fsnet.live import main

        sys.exit(main())
    except KeyboardInterrupt:  # one the job does not handle itself: while torch loads, say
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
