"""Evaluate a speech-enhancement model: ``python evaluate.py checkpoint=... testset=... mode=both``.

Thin wrapper around :func:`fsnet.evaluate.main`; options are in ``configs/evaluate.yaml``.
"""

import sys

try:
    from fsnet.evaluate import main
except KeyboardInterrupt:  # Ctrl-C while torch loads: nothing started, nothing to write
    print("error: interrupted before start", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
