"""The agent and the portal compare versions apart (the agent imports the standard library only,
catalog may not import agent_dist: tests/core/test_dependencies.py), so one table pins them together:
upgrade.version_key vs catalog.agent_versions.parse, and the two readers of ``__version__``."""

from __future__ import annotations

import pytest

from agent_dist import build
from backup_agent import upgrade
from catalog import agent_versions

# (a, b, how a compares to b)
TABLE = [
    ("4.0", "4.0.0", 0),
    ("4", "4.0.0", 0),
    ("4.0.10", "4.0.9", 1),
    ("4.1rc1", "4.1", 0),  # a suffix is ignored
    ("4.1rc1", "4.0.9", 1),
    ("4.0.0.dev0", "4.0.0", 0),
    ("4.0.0+local", "4.0.1", -1),
    ("3.2.0", "4.0.0", -1),
    (" 4.0.1 ", "4.0.1", 0),
    ("10.0", "9.9.9", 1),
    ("", "4.0.0", -1),
    ("garbage", "0", -1),
]


def _sign(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return (a > b) - (a < b)


@pytest.mark.parametrize(("a", "b", "expected"), TABLE)
def test_the_agent_and_the_portal_compare_versions_alike(a, b, expected, tmp_path):
    assert upgrade.version_key(a) == agent_versions.parse(a)
    assert _sign(upgrade.version_key(a), upgrade.version_key(b)) == expected
    assert _sign(agent_versions.parse(a), agent_versions.parse(b)) == expected
    # The zipapp's manifest (agent_dist.build) and the portal's shipped version read the same line.
    src = tmp_path / "backup_agent"
    src.mkdir()
    for line in (f'__version__ = "{a.strip()}"', f'__version__="{a.strip()}"  # release'):
        (src / "__init__.py").write_text(f'"""The agent."""\n\nPROTOCOL_VERSION = 4\n{line}\n')
        found = agent_versions._VERSION_LINE.search((src / "__init__.py").read_text())
        if not a.strip():
            assert found is None
            with pytest.raises(build.BuildError):
                build.version(src)
            continue
        assert found is not None and build.version(src) == found.group(1) == a.strip()
