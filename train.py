#!/usr/bin/env python3
"""Train Fast FullSubNet: python train.py recipe=dns recipe.root=/path/to/DNS/datasets [overrides].

Configuration lives in configs/ (Hydra); see recipes/dns/README.md.
"""

import sys

try:
    from fsnet.train import main
except KeyboardInterrupt:  # Ctrl-C while torch loads: nothing started, nothing to write
    print("error: interrupted before start", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
