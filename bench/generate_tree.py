"""Generate a file tree of a given size for the agent benchmarks.

Mixed sizes (many small files, some large ones) in nested folders, with
incompressible content, so neither tar nor the disk cache flatters the result.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

SMALL, MEDIUM, LARGE = 16 * 1024, 1024 * 1024, 64 * 1024 * 1024


def generate(root: Path, total_bytes: int, *, seed: int = 7) -> tuple[int, int]:
    """Fill ``root`` with about ``total_bytes``; returns (files, bytes) written."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = files = 0
    block = os.urandom(LARGE)  # reused slices: random enough for tar and sha256, cheap to make
    while written < total_bytes:
        size = rng.choice((SMALL, SMALL, SMALL, MEDIUM, MEDIUM, LARGE))
        size = min(size, total_bytes - written)
        folder = root / f"d{files % 37:02d}" / f"s{files % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        offset = rng.randrange(0, LARGE - size + 1)
        (folder / f"f{files:06d}.bin").write_bytes(block[offset : offset + size])
        written += size
        files += 1
    return files, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    files, written = generate(args.root, args.mib * 1024 * 1024)
    print(f"{files} files, {written / 2**20:.0f} MiB in {args.root}")


if __name__ == "__main__":
    main()
