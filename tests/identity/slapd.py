"""A real OpenLDAP server (Debian's slapd) for the LDAP tests, on a free loopback port.

One server per test session, its mdb database in a temporary folder, the test directory
written with ``ldapadd`` over the wire (as the identity team would). ``make test`` installs
slapd (the Makefile's ``slapd`` target); a missing slapd fails the tests, never skips them.

The directory (base ``dc=example,dc=test``)::

    ou=people   alice (in shop-owners, backup-ops), bob (in shop-owners), carol (in ops-nested
                only, itself a member of platform), dave (locked: pwdAccountLockedTime)
    ou=groups   shop-owners, hr-owners, backup-ops, platform ∋ ops-nested (groupOfNames)
    cn=portal,ou=services  the portal's read-only bind account
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLAPD = "/usr/sbin/slapd"
HOST = "127.0.0.1"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
BASE = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root-secret"  # noqa: S105 - a throwaway test server
BIND_DN = f"cn=portal,ou=services,{BASE}"
BIND_PASSWORD = "portal-secret"  # noqa: S105
# ppolicy's "locked by an administrator" value, the portal's default LDAP_DISABLED_FILTER.
LOCKED = "000001010000Z"

MISSING = (
    "slapd (OpenLDAP) is not installed at /usr/sbin/slapd: the LDAP sign-in tests need a real "
    "directory server. Run `make slapd` (or `apt-get install slapd ldap-utils`); `make test` does it."
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certificates(folder: Path) -> Path:
    """A CA and a certificate for 127.0.0.1 signed by it (ca.pem, server.pem, server.key); the CA's path."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test directory CA"))
        .issuer_name(name("Test directory CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(HOST))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "ca.pem"


def slapd_conf(folder: Path, *, tls: bool = False) -> str:
    schemas = "\n".join(
        f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    tls_lines = (
        f"TLSCACertificateFile {folder}/ca.pem\nTLSCertificateFile {folder}/server.pem\n"
        f"TLSCertificateKeyFile {folder}/server.key\n"
        if tls
        else ""
    )
    return f"""{schemas}
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload ppolicy
pidfile {folder}/slapd.pid
{tls_lines}database mdb
maxsize 104857600
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {folder}/db
overlay ppolicy
access to attrs=userPassword by self auth by anonymous auth by * none
access to * by dn.exact="{BIND_DN}" read by self read by * none
"""


def password(uid: str) -> str:
    return f"{uid}-pass"


def person(uid: str, given: str = "Test", surname: str = "Person", extra: str = "") -> str:
    return f"""dn: uid={uid},ou=people,{BASE}
objectClass: inetOrgPerson
uid: {uid}
cn: {given} {surname}
givenName: {given}
sn: {surname}
mail: {uid}@example.test
userPassword: {password(uid)}
{extra}"""


def group(name: str, *members: str) -> str:
    lines = "\n".join(f"member: {member}" for member in members)
    return f"dn: cn={name},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {name}\n{lines}\n"


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE}"


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,{BASE}"


def directory_ldif() -> str:
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        *(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n" for ou in ("people", "groups")),
        f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {BIND_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: portal\nsn: portal\n"
        f"userPassword: {BIND_PASSWORD}\n",
        person("alice", "Alice", "Archer"),
        person("bob", "Bob", "Baker"),
        person("carol", "Carol", "Cooper"),
        person("dave", "Dave", "Dormant", f"pwdAccountLockedTime: {LOCKED}\n"),
        group("shop-owners", user_dn("alice"), user_dn("bob")),
        group("hr-owners", BIND_DN),  # groupOfNames needs a member; nobody of ours yet
        group("backup-ops", user_dn("alice")),
        group("ops-nested", user_dn("carol")),
        group("platform", group_dn("ops-nested")),
    ]
    return "\n".join(entries)


@dataclass
class Slapd:
    """A running slapd; ``modify`` changes the directory as its administrators would."""

    uri: str
    folder: Path
    process: subprocess.Popen | None = None
    ldaps_uri: str = ""  # with TLS: the ldaps:// address too (uri then offers StartTLS)

    def ldap(self, tool: str, ldif: str, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - fixed tools, test input
            [shutil.which(tool) or tool, "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *args],
            input=ldif,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}\n{ldif}")

    def add(self, ldif: str) -> None:
        self.ldap("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self.ldap("ldapmodify", ldif)

    def add_member(self, group_name: str, member_dn: str) -> None:
        self.modify(f"dn: {group_dn(group_name)}\nchangetype: modify\nadd: member\nmember: {member_dn}\n")

    def remove_member(self, group_name: str, member_dn: str) -> None:
        self.modify(f"dn: {group_dn(group_name)}\nchangetype: modify\ndelete: member\nmember: {member_dn}\n")

    def lock(self, uid: str) -> None:
        self.modify(
            f"dn: {user_dn(uid)}\nchangetype: modify\nreplace: pwdAccountLockedTime\n"
            f"pwdAccountLockedTime: {LOCKED}\n"
        )

    def unlock(self, uid: str) -> None:
        self.modify(f"dn: {user_dn(uid)}\nchangetype: modify\ndelete: pwdAccountLockedTime\n")

    def delete(self, dn: str) -> None:
        self.ldap("ldapdelete", "", dn)

    def start(self) -> None:
        port = self.uri.rsplit(":", 1)[1].rstrip("/")
        self.process = subprocess.Popen(  # noqa: S603
            [SLAPD, "-h", f"{self.uri} {self.ldaps_uri}".strip(), "-f", str(self.folder / "slapd.conf")]
            + ["-d", "0"],  # in the foreground: the process is the server
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"slapd exited with {self.process.returncode}:\n{output}")
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not listen on {self.uri} within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def start_slapd(folder: Path, *, tls: bool = False) -> Slapd:
    """A new server with the test directory; with ``tls``, StartTLS and ldaps:// with a CA of its own."""
    if not Path(SLAPD).exists():
        raise RuntimeError(MISSING)
    (folder / "db").mkdir(parents=True)
    if tls:
        make_certificates(folder)
    (folder / "slapd.conf").write_text(slapd_conf(folder, tls=tls))
    server = Slapd(uri=f"ldap://127.0.0.1:{free_port()}/", folder=folder)
    if tls:
        server.ldaps_uri = f"ldaps://127.0.0.1:{free_port()}/"
    server.start()
    try:
        server.add(directory_ldif())
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory) -> Iterator[Slapd]:
    """The session's OpenLDAP server; killed at the end of the session, even after a failure."""
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    atexit.register(server.stop)  # also when pytest is interrupted before its finalizers run
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def new_person(slapd_server) -> Iterator:
    """Adds a person of one's own to the directory (tests change them), removed afterwards."""
    added: list[str] = []

    def add(*groups: str, uid: str | None = None) -> str:
        uid = uid or f"user{next(_numbers)}"
        slapd_server.add(person(uid))
        added.append(uid)
        for name in groups:
            slapd_server.add_member(name, user_dn(uid))
        return uid

    yield add
    for uid in added:
        for name in ("shop-owners", "hr-owners", "backup-ops", "ops-nested"):
            with contextlib.suppress(RuntimeError):  # not a member
                slapd_server.remove_member(name, user_dn(uid))
        with contextlib.suppress(RuntimeError):  # deleted by the test
            slapd_server.delete(user_dn(uid))


_numbers = itertools.count(1)
