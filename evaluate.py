"""Evaluate a speech-enhancement model: ``python evaluate.py checkpoint=... testset=... mode=both``.

Thin wrapper around :func:`fsnet.evaluation.cli.main`; options are in ``configs/evaluate.yaml``.
"""

import sys

if __name__ == "__main__":
    try:
        from fsnet.evaluation.cli import main

        main()
    except KeyboardInterrupt:  # one the job does not handle itself: while torch loads, say
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
