"""Settings parsers: a typo in the environment stops the process, it never becomes a default."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal import env
from portal.env import ConfigError, parse_database_url

BASE = Path("/opt/backup-portal")


# --- Booleans -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "True", "YES", "on", " true "])
def test_true_spellings(monkeypatch, raw):
    monkeypatch.setenv("DEBUG", raw)
    assert env.get_bool("DEBUG", False) is True


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "Off", ""])
def test_false_spellings(monkeypatch, raw):
    monkeypatch.setenv("DEBUG", raw)
    assert env.get_bool("DEBUG", True) is False


@pytest.mark.parametrize("default", [True, False])
def test_unset_bool_takes_the_default(monkeypatch, default):
    monkeypatch.delenv("DEBUG", raising=False)
    assert env.get_bool("DEBUG", default) is default


@pytest.mark.parametrize("raw", ["Fasle", "ture", "2", "enabled", "y"])
def test_misspelt_bool_is_an_error_not_true(monkeypatch, raw):
    monkeypatch.setenv("DEBUG", raw)
    with pytest.raises(ConfigError) as excinfo:
        env.get_bool("DEBUG", False)
    assert str(excinfo.value) == f"DEBUG={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)"


# --- Integers --------------------------------------------------------------------------------


def test_int_is_parsed(monkeypatch):
    monkeypatch.setenv("Q_WORKERS", " 8 ")
    assert env.get_int("Q_WORKERS", 2, minimum=1) == 8


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_blank_int_takes_the_default(monkeypatch, raw):
    if raw is None:
        monkeypatch.delenv("Q_WORKERS", raising=False)
    else:
        monkeypatch.setenv("Q_WORKERS", raw)
    assert env.get_int("Q_WORKERS", 2, minimum=1) == 2


@pytest.mark.parametrize("raw", ["eight", "2.5", "8s"])
def test_int_that_is_not_a_number_is_an_error(monkeypatch, raw):
    monkeypatch.setenv("Q_WORKERS", raw)
    with pytest.raises(ConfigError, match=rf"^Q_WORKERS='{raw}' is not an integer$"):
        env.get_int("Q_WORKERS", 2, minimum=1)


def test_int_below_the_minimum_is_an_error(monkeypatch):
    monkeypatch.setenv("PORTAL_AGENT_SILENT_AFTER", "29")
    with pytest.raises(ConfigError, match=r"^PORTAL_AGENT_SILENT_AFTER=29 must be at least 30$"):
        env.get_int("PORTAL_AGENT_SILENT_AFTER", 180, minimum=30)


def test_int_at_the_minimum_is_accepted(monkeypatch):
    monkeypatch.setenv("PORTAL_AGENT_SILENT_AFTER", "30")
    assert env.get_int("PORTAL_AGENT_SILENT_AFTER", 180, minimum=30) == 30


def test_int_without_minimum_may_be_negative(monkeypatch):
    monkeypatch.setenv("OFFSET", "-5")
    assert env.get_int("OFFSET", 0) == -5


# --- Lists and choices ------------------------------------------------------------------------


def test_list_is_split_on_commas_and_trimmed(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", " portal.example.com, backup.example.com ,,")
    assert env.get_list("ALLOWED_HOSTS", []) == ["portal.example.com", "backup.example.com"]


def test_empty_list_variable_means_an_empty_list_not_the_default(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "")
    assert env.get_list("ALLOWED_HOSTS", ["localhost"]) == []


def test_unset_list_returns_a_copy_of_the_default(monkeypatch):
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    default = ["localhost"]
    hosts = env.get_list("ALLOWED_HOSTS", default)
    hosts.append("evil.example.com")
    assert default == ["localhost"]


def test_choice_is_accepted_and_trimmed(monkeypatch):
    monkeypatch.setenv("PORTAL_TASK_BACKEND", " celery ")
    assert env.get_choice("PORTAL_TASK_BACKEND", "django_q", ("django_q", "celery")) == "celery"


def test_unset_choice_takes_the_default(monkeypatch):
    monkeypatch.delenv("PORTAL_TASK_BACKEND", raising=False)
    assert env.get_choice("PORTAL_TASK_BACKEND", "django_q", ("django_q", "celery")) == "django_q"


def test_unknown_choice_is_an_error_that_lists_the_choices(monkeypatch):
    monkeypatch.setenv("PORTAL_TASK_BACKEND", "rq")
    with pytest.raises(ConfigError) as excinfo:
        env.get_choice("PORTAL_TASK_BACKEND", "django_q", ("django_q", "celery"))
    assert str(excinfo.value) == "PORTAL_TASK_BACKEND='rq' must be one of: django_q, celery"


# --- Strings and *_FILE secrets ------------------------------------------------------------------


def test_string_from_the_environment(monkeypatch):
    monkeypatch.delenv("SECRET_KEY_FILE", raising=False)
    monkeypatch.setenv("SECRET_KEY", "from-env")
    assert env.get_str("SECRET_KEY") == "from-env"


def test_unset_string_takes_the_default(monkeypatch):
    monkeypatch.delenv("TIME_ZONE", raising=False)
    monkeypatch.delenv("TIME_ZONE_FILE", raising=False)
    assert env.get_str("TIME_ZONE", "UTC") == "UTC"
    assert env.get_str("TIME_ZONE") is None


def test_secret_is_read_from_the_file_named_by_file_variable(monkeypatch, tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("s3cr3t-from-a-docker-secret\n")  # editors and `echo` add the newline
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    monkeypatch.setenv("SECRET_KEY", "ignored-when-a-file-is-given")
    assert env.get_str("SECRET_KEY") == "s3cr3t-from-a-docker-secret"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_secret_file_is_an_error_naming_the_variable(monkeypatch, tmp_path, kind):
    path = tmp_path / "no-such-secret" if kind == "missing" else tmp_path
    monkeypatch.setenv("SECRET_KEY_FILE", str(path))
    with pytest.raises(ConfigError) as excinfo:
        env.get_str("SECRET_KEY")
    assert str(excinfo.value).startswith(f"SECRET_KEY_FILE={str(path)!r} cannot be read: ")


# --- DATABASE_URL ----------------------------------------------------------------------------------


def test_sqlite_relative_path_is_taken_from_the_base_directory():
    assert parse_database_url("sqlite:///var/portal.sqlite3", base_dir=BASE) == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/opt/backup-portal/var/portal.sqlite3",
    }


def test_sqlite_absolute_path_has_four_slashes():
    config = parse_database_url("sqlite:////srv/portal/db.sqlite3", base_dir=BASE)
    assert config["NAME"] == "/srv/portal/db.sqlite3"


def test_sqlite_path_may_be_url_encoded():
    config = parse_database_url("sqlite:////srv/my%20portal/db.sqlite3", base_dir=BASE)
    assert config["NAME"] == "/srv/my portal/db.sqlite3"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://:memory:"])
def test_sqlite_in_memory(url):
    """All four spellings dj-database-url reads as an in-memory database, never as a file."""
    assert parse_database_url(url, base_dir=BASE) == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
    }


def test_postgres_url_with_everything():
    url = "postgres://portal:p%40ss%3Aw%2Frd%25@db.example.com:6432/backup%5Fportal?sslmode=verify-full&connect_timeout=5"
    assert parse_database_url(url, base_dir=BASE) == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "backup_portal",
        "USER": "portal",
        "PASSWORD": "p@ss:w/rd%",
        "HOST": "db.example.com",
        "PORT": "6432",
        "OPTIONS": {"sslmode": "verify-full", "connect_timeout": "5"},
    }


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql", "PostgreSQL"])
def test_postgres_scheme_aliases(scheme):
    config = parse_database_url(f"{scheme}://127.0.0.1/portal", base_dir=BASE)
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["HOST"], config["PORT"], config["USER"], config["PASSWORD"]) == (
        "portal",
        "127.0.0.1",
        "",
        "",
        "",
    )


def test_postgres_without_host_uses_the_local_socket():
    config = parse_database_url("postgres:///portal", base_dir=BASE)
    assert (config["NAME"], config["HOST"], config["PORT"]) == ("portal", "", "")


def test_postgres_url_must_name_a_database():
    with pytest.raises(ConfigError, match="^DATABASE_URL for PostgreSQL must name a database$"):
        parse_database_url("postgres://portal@db.example.com:5432/", base_dir=BASE)


@pytest.mark.parametrize("port", ["543a", "99999"])
def test_postgres_url_with_a_bad_port_is_a_config_error(port):
    """A typo in the port must stop start-up with a message naming DATABASE_URL, like every other typo."""
    with pytest.raises(ConfigError, match="^DATABASE_URL cannot be read: Port "):
        parse_database_url(f"postgres://portal@db.example.com:{port}/portal", base_dir=BASE)


def test_url_that_is_no_url_is_a_config_error():
    with pytest.raises(ConfigError, match="^DATABASE_URL cannot be read: Invalid IPv6 URL$"):
        parse_database_url("postgres://portal@[::1/portal", base_dir=BASE)


@pytest.mark.parametrize("url", ["sqlite://portal.sqlite3", "sqlite://var/portal.sqlite3"])
def test_sqlite_url_with_a_host_is_an_error_not_an_in_memory_database(url):
    with pytest.raises(ConfigError, match=r"^DATABASE_URL for SQLite names a file after three slashes"):
        parse_database_url(url, base_dir=BASE)


def test_postgres_options_stay_text_and_the_last_of_a_repeated_one_wins():
    url = "postgres:///portal?sslmode=require&keepalives=1&sslmode=verify-full"
    config = parse_database_url(url, base_dir=BASE)
    assert config["OPTIONS"] == {"sslmode": "verify-full", "keepalives": "1"}


def test_postgres_socket_directory_may_be_the_url_encoded_host():
    config = parse_database_url("postgres://portal@%2Fvar%2Frun%2Fpostgresql/portal", base_dir=BASE)
    assert (config["HOST"], config["NAME"]) == ("/var/run/postgresql", "portal")


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/portal", "db.sqlite3", "sqlite3:///db.sqlite3", "oracle://x/y"]
)
def test_unsupported_database_url_is_an_error(url):
    with pytest.raises(
        ConfigError, match=r"^DATABASE_URL scheme '.*' is not supported \(use sqlite:/// or postgres://\)$"
    ):
        parse_database_url(url, base_dir=BASE)
