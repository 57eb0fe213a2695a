#!/usr/bin/env python3
"""Build the agent's distributions into dist/agent/ (`make agent-dist`).

    dist/agent/backup_agent-<version>-py3-none-any.whl   pip/pipx install; backup_agent only, no dependencies
    dist/agent/backup-agent.pyz (+ .sha256)              the single-file zipapp (python3 >= 3.11)
    dist/agent/backup-agent_<version>_all.deb            Debian's dpkg-deb; --no-deb to skip it

Standard library only; the recipe is agent_dist/build.py, which the portal also uses to
build the zipapp it serves. SOURCE_DATE_EPOCH sets the timestamps inside (default: a fixed date).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent_dist import build  # noqa: E402 - after the path above


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "agent", help="output folder")
    parser.add_argument("--no-deb", action="store_true", help="skip the Debian package")
    args = parser.parse_args(argv)
    try:
        built = build.build_all(args.out, deb=not args.no_deb)
    except build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, path in built.items():
        print(f"{kind:7} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
