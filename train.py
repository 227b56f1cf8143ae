#!/usr/bin/env python3
"""Train Fast FullSubNet: python train.py recipe=dns recipe.root=/path/to/DNS/datasets [overrides].

Configuration lives in configs/ (Hydra); see recipes/dns/README.md.
"""

from fsnet.train import main

if __name__ == "__main__":
    main()
