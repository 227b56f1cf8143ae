"""``python -m fsnet.train [overrides]``: the same as ``python train.py``."""

import sys

from fsnet.train import main

sys.exit(main())
