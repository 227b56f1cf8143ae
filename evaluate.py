"""Evaluate a speech-enhancement model: ``python evaluate.py checkpoint=... testset=... mode=both``.

Thin wrapper around :func:`fsnet.evaluate.main`; options are in ``configs/evaluate.yaml``.
"""

from fsnet.evaluate import main

if __name__ == "__main__":
    main()
