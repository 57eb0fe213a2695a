"""The dependency directions of docs/architecture.md, read from every import in the tree.

demo → reports → requests_app → catalog → core → Django; agent_dist (the agent's
packages) knows no app and requests_app may use it; portal (the project)
may import every app and no app imports it; the agent imports the standard
library only. An import in the wrong direction fails here, not in a review.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What each package must never import (top-level package names).
FORBIDDEN = {
    "core": {"catalog", "requests_app", "reports", "demo", "identity"},
    "identity": {"catalog", "requests_app", "reports", "demo", "portal"},
    "catalog": {"requests_app", "reports", "demo", "portal"},
    "requests_app": {"reports", "demo", "portal"},
    "reports": {"demo", "portal"},
    "demo": {"portal"},
    # What the portal serves a new server: built from backup_agent's files, knowing no app.
    "agent_dist": {"core", "catalog", "requests_app", "reports", "demo", "identity", "portal"},
}
#: The one import of the project by core: the Celery app, loaded only when Celery is the backend.
ALLOWED = {("core/queue.py", "portal")}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, at any depth (lazy imports in functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    wrong = []
    for path in modules(package):
        rel = path.relative_to(ROOT).as_posix()
        for name in imported_packages(path) & FORBIDDEN[package]:
            if (rel, name) not in ALLOWED:
                wrong.append(f"{rel} imports {name}")
    assert not wrong, wrong


def test_the_agent_imports_the_standard_library_only():
    wrong = []
    for path in modules("backup_agent"):
        for name in imported_packages(path) - {"backup_agent", "__future__"}:
            if name not in sys.stdlib_module_names:
                wrong.append(f"{path.relative_to(ROOT).as_posix()} imports {name}")
    assert not wrong, wrong


def test_the_check_sees_a_wrong_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from requests_app.models import ClientRequest\n")
    assert "requests_app" in imported_packages(module) & FORBIDDEN["catalog"]


def imported_modules(path: Path) -> set[str]:
    """Full names of the modules a file imports (``from a.b import c`` counts as ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


#: What of the agent the portal may import: the file-list format (defined once, by its writer), and
#: for agent_dist, which builds the agent's packages, the agent's install layout (its paths, its unit).
AGENT_MODULES_ALLOWED = {"backup_agent.file_index"}
AGENT_DIST_ALLOWED = {"backup_agent.layout"}


def test_the_portal_uses_of_the_agent_only_its_file_list_format():
    """The file-list format is defined once, by its writer; the rest of the agent stays the agent's."""
    wrong = []
    for package in (*FORBIDDEN, "portal"):
        allowed = AGENT_MODULES_ALLOWED | (AGENT_DIST_ALLOWED if package == "agent_dist" else set())
        for path in modules(package):
            for name in imported_modules(path):
                if name.split(".")[0] == "backup_agent" and name not in allowed:
                    wrong.append(f"{path.relative_to(ROOT).as_posix()} imports {name}")
    assert not wrong, wrong
