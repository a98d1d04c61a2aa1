"""Write a small H.264 + AAC test clip with PyAV: ``python benchmarks/make_clip.py OUT.mp4 [--seconds S]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import make_clip

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(make_clip(args.out, seconds=args.seconds))
