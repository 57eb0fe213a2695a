"""Build the agent's distributions: the wheel, the single-file zipapp and the Debian package.

Standard library only (no Django, no build backend to download), so the same code runs in
scripts/build_agent.py on a build machine and inside the portal, which builds the zipapp it
serves from its own copy of backup_agent/ (agent_dist/artifacts.py).

Reproducible: entries sorted, every timestamp SOURCE_DATE_EPOCH (default: a fixed date), file
modes fixed. Two builds of the same source give byte-identical wheel and zipapp, so every
portal worker that builds the zipapp publishes the same SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

# Where the installers put the zipapp (install.sh: under /usr/local; the .deb: under /usr).
from backup_agent.layout import DEB_BIN, DEB_PYZ, LOCAL_BIN, PYZ_NAME, UNIT_NAME

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "packaging" / "agent" / "pyproject.toml"
DEBIAN_DIR = REPO / "packaging" / "agent" / "debian"
UNIT_FILE = REPO / "deploy" / "systemd" / "backup-agent.service"

SHEBANG = b"#!/usr/bin/env python3\n"
ZIPAPP_MAIN = "# -*- coding: utf-8 -*-\nimport sys\n\nfrom backup_agent.cli import main\n\nsys.exit(main())\n"
# Bumped when what the builds put into the artifacts changes (not only backup_agent's source).
RECIPE = "1"
# 2024-01-01T00:00:00Z: zip timestamps cannot go before 1980, and a fixed date keeps builds identical.
DEFAULT_EPOCH = 1704067200


class BuildError(RuntimeError):
    pass


def agent_source() -> Path:
    """The backup_agent package this code ships: the portal's own copy."""
    spec = importlib.util.find_spec("backup_agent")
    if spec is None or spec.origin is None:
        raise BuildError("the backup_agent package is not importable")
    return Path(spec.origin).resolve().parent


def source_files(src: Path | None = None) -> list[tuple[str, Path]]:
    """(archive name, file) of every module of backup_agent, sorted; no caches, no stray files."""
    src = src or agent_source()
    files = [
        (f"backup_agent/{path.relative_to(src).as_posix()}", path)
        for path in src.rglob("*.py")
        if "__pycache__" not in path.parts
    ]
    return sorted(files)


def source_digest(src: Path | None = None) -> str:
    """A hash of what the artifacts are built from: staleness check for the portal's copy."""
    digest = hashlib.sha256(f"recipe {RECIPE}\n".encode())
    for name, path in source_files(src):
        data = path.read_bytes()
        digest.update(f"{name} {len(data)}\n".encode())
        digest.update(data)
    if UNIT_FILE.exists():
        digest.update(UNIT_FILE.read_bytes())
    return digest.hexdigest()


def version(src: Path | None = None) -> str:
    """backup_agent.__version__, read from the source (not from whatever is imported)."""
    text = ((src or agent_source()) / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not found:
        raise BuildError("backup_agent/__init__.py has no __version__")
    return found.group(1)


def epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else DEFAULT_EPOCH


def _zip_time() -> tuple[int, int, int, int, int, int]:
    return time.gmtime(max(epoch(), 315532800))[:6]  # zip's calendar starts in 1980


def _zip_entry(name: str, mode: int = 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_zip_time())
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.create_system = 3  # Unix, so the modes above mean what they say
    return info


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace(tmp: Path, dest: Path) -> None:
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def _temp_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(handle)
    return Path(name)


def zipapp_bytes(src: Path | None = None) -> bytes:
    """The zipapp: `#!/usr/bin/env python3`, then a compressed zip of backup_agent and __main__.py."""
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        entries = [(name, path.read_bytes()) for name, path in source_files(src)]
        entries.append(("__main__.py", ZIPAPP_MAIN.encode()))
        for name, data in sorted(entries):
            archive.writestr(_zip_entry(name), data)
    return buffer.getvalue()


def build_zipapp(dest: Path, src: Path | None = None) -> str:
    """Write the zipapp (executable) and `<dest>.sha256` beside it; returns the SHA-256."""
    data = zipapp_bytes(src)
    checksum = hashlib.sha256(data).hexdigest()
    tmp = _temp_beside(dest)
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)  # noqa: S103 - a program every user may run, like /usr/bin's
    os.replace(tmp, dest)
    side = dest.with_name(dest.name + ".sha256")
    tmp = _temp_beside(side)
    tmp.write_text(f"{checksum}  {dest.name}\n", encoding="ascii")
    _replace(tmp, side)
    return checksum


def _metadata() -> dict:
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)["project"]


def wheel_name(ver: str | None = None) -> str:
    return f"backup_agent-{ver or version()}-py3-none-any.whl"


def build_wheel(outdir: Path, src: Path | None = None) -> Path:
    """A PEP 427 wheel of backup_agent alone: the metadata of packaging/agent/pyproject.toml."""
    project = _metadata()
    ver = version(src)
    dist_info = f"backup_agent-{ver}.dist-info"
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {ver}",
        f"Summary: {project['description']}",
        f"License: {project.get('license', {}).get('text', 'UNKNOWN')}",
        f"Requires-Python: {project['requires-python']}",
        *(f"Classifier: {value}" for value in project.get("classifiers", [])),
    ]
    scripts = "".join(f"{name} = {target}\n" for name, target in sorted(project.get("scripts", {}).items()))
    files = [(name, path.read_bytes()) for name, path in source_files(src)]
    files += [
        (f"{dist_info}/METADATA", ("\n".join(lines) + "\n").encode()),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: backup-portal (agent_dist/build.py)\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{dist_info}/entry_points.txt", f"[console_scripts]\n{scripts}".encode()),
        (f"{dist_info}/top_level.txt", b"backup_agent\n"),
    ]
    record = []
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    dest = outdir / wheel_name(ver)
    tmp = _temp_beside(dest)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:  # RECORD last, as the wheel format expects
            archive.writestr(_zip_entry(name), data)
    _replace(tmp, dest)
    return dest


def unit_text(binary: str = LOCAL_BIN) -> str:
    """deploy/systemd/backup-agent.service, with ExecStart pointing at `binary`."""
    text = UNIT_FILE.read_text(encoding="utf-8")
    return text.replace(f"ExecStart={LOCAL_BIN} ", f"ExecStart={binary} ")


def deb_name(ver: str | None = None) -> str:
    return f"backup-agent_{ver or version()}_all.deb"


def build_deb(outdir: Path, pyz: Path, src: Path | None = None) -> Path:
    """The Debian package, built by Debian's dpkg-deb (root:root entries without fakeroot)."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise BuildError("dpkg-deb is not installed (apt-get install dpkg-dev): cannot build the .deb")
    ver = version(src)
    stamp = epoch()
    with tempfile.TemporaryDirectory(prefix="backup-agent-deb-") as tmp:
        root = Path(tmp) / "root"
        files: dict[str, tuple[bytes, int]] = {
            DEB_PYZ.lstrip("/"): (pyz.read_bytes(), 0o755),
            f"lib/systemd/system/{UNIT_NAME}": (unit_text(DEB_BIN).encode(), 0o644),
            "usr/share/doc/backup-agent/copyright": ((DEBIAN_DIR / "copyright").read_bytes(), 0o644),
            "usr/share/doc/backup-agent/README": ((DEBIAN_DIR / "README").read_bytes(), 0o644),
        }
        for script in ("postinst", "prerm", "postrm"):
            files[f"DEBIAN/{script}"] = ((DEBIAN_DIR / script).read_bytes(), 0o755)
        size_kib = (sum(len(data) for data, _ in files.values()) + 1023) // 1024
        control = (DEBIAN_DIR / "control.in").read_text(encoding="utf-8")
        control = control.replace("@VERSION@", ver).replace("@INSTALLED_SIZE@", str(size_kib))
        files["DEBIAN/control"] = (control.encode(), 0o644)
        for name, (data, mode) in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, mode)
        link = root / DEB_BIN.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(DEB_PYZ, os.path.dirname(DEB_BIN)))
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, 0o755)  # noqa: S103 - the package's folders, as dpkg expects
            os.utime(path, (stamp, stamp), follow_symlinks=False)
        os.chmod(root, 0o755)  # noqa: S103 - the package's root folder
        os.utime(root, (stamp, stamp))
        dest = outdir / deb_name(ver)
        tmp_deb = _temp_beside(dest)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(stamp)}
        done = subprocess.run(  # noqa: S603 - a fixed argv, no shell
            [dpkg_deb, "--root-owner-group", "-Zxz", "--build", str(root), str(tmp_deb)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            tmp_deb.unlink(missing_ok=True)
            raise BuildError(f"dpkg-deb failed: {done.stderr.strip() or done.stdout.strip()}")
        _replace(tmp_deb, dest)
    return dest


def build_all(outdir: Path, *, deb: bool = True) -> dict[str, Path]:
    """dist/agent/: the wheel, backup-agent.pyz (+ .sha256) and the .deb."""
    outdir.mkdir(parents=True, exist_ok=True)
    pyz = outdir / PYZ_NAME
    build_zipapp(pyz)
    built = {"wheel": build_wheel(outdir), "pyz": pyz, "sha256": outdir / f"{PYZ_NAME}.sha256"}
    if deb:
        built["deb"] = build_deb(outdir, pyz)
    return built
