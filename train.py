#!/usr/bin/env python3
"""Train Fast FullSubNet: python train.py recipe=dns recipe.root=/path/to/DNS/datasets [overrides].

Configuration lives in configs/ (Hydra); see recipes/dns/README.md.
"""

import sys

if __name__ == "__main__":
    try:
        from fsnet.train import main

        sys.exit(main())
    except KeyboardInterrupt:  # one the job does not handle itself: while torch loads, say
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
