"""Plugin options become arguments of tar, pg_dump, mysqldump or a command on a server.

Whatever the admin, a form or the API accepts here ends up on an application
server, so each refusal must happen here and say in plain words what is wrong.
"""

from __future__ import annotations

import copy

import pytest
from django.core.exceptions import ValidationError

from catalog.choices import Plugin
from catalog.plugin_options import validate_options
from tests import factories

DUMP = "/usr/local/bin/app-dump"
LOAD = "/usr/local/bin/app-load"


def refusal(plugin: str, options: object) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as excinfo:
        validate_options(plugin, options)
    return excinfo.value.message_dict


VALID = [
    (Plugin.FILES, {"paths": ["/srv/app/data"]}),
    (Plugin.FILES, {"paths": ["/srv/app/data", "/etc/app"], "exclude": ["*.tmp", "cache/*"]}),
    (Plugin.FILES, {"paths": ["/srv/app/v1.2..final"]}),  # dots inside a name are not a parent
    (Plugin.POSTGRESQL, {"database": "orders"}),
    (
        Plugin.POSTGRESQL,
        {"database": "orders_prod", "host": "db01.example.com", "port": 5432, "user": "backup"},
    ),
    (Plugin.MYSQL, {"database": "shop-db", "host": "10.0.0.5", "port": 3306, "user": "backup@localhost"}),
    (Plugin.MYSQL, {"database": "wp$site", "port": 65535}),
    (
        Plugin.COMMAND,
        {
            "backup_argv": [DUMP, "--out", "{target}", "--job={job_id}", "{client}"],
            "restore_argv": [LOAD, "--from", "{target}"],
        },
    ),
    (Plugin.COMMAND, {"backup_argv": [DUMP, "--json={{}}"], "restore_argv": [LOAD]}),  # escaped braces
]


@pytest.mark.parametrize(
    ("plugin", "options"),
    VALID,
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_valid_options_are_accepted_as_given(plugin, options):
    given = copy.deepcopy(options)

    assert validate_options(plugin, options) is None  # no ValidationError, and no cleaned copy to use
    assert options == given  # checked, not cleaned: what the agent receives is what was typed
    # The model agrees (what the admin, the portal and the API save).
    factories.BackupClientFactory.build(plugin=plugin, options=options, agent=None).clean()


def test_every_plugin_has_valid_options_above():
    assert {plugin for plugin, _ in VALID} == set(Plugin.values)


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["srv/data"], "'srv/data' is not absolute: it must start with /."),
        (["/srv/data/../../etc"], "'/srv/data/../../etc' must not contain '..'."),
        (["/srv/\x00data"], "The path contains a NUL character."),
        ([""], "Enter an absolute path such as /srv/app/data."),
        ([42], "Enter an absolute path such as /srv/app/data."),
        ([], "List at least one absolute path to back up."),
        ("/srv/data", "List at least one absolute path to back up."),
    ],
    ids=["relative", "parent", "nul", "empty-path", "not-a-string", "no-paths", "not-a-list"],
)
def test_files_paths_must_be_absolute_and_stay_put(paths, message):
    assert refusal(Plugin.FILES, {"paths": paths}) == {"paths": [message]}


def test_second_path_is_checked_as_well_as_the_first():
    assert refusal(Plugin.FILES, {"paths": ["/srv/data", "data"]}) == {
        "paths": ["'data' is not absolute: it must start with /."]
    }


@pytest.mark.parametrize("exclude", ["*.tmp", [""], [None]], ids=["string", "empty", "null"])
def test_files_exclusions_must_be_a_list_of_patterns(exclude):
    assert refusal(Plugin.FILES, {"paths": ["/srv"], "exclude": exclude}) == {
        "exclude": ["Exclusions must be a list of glob patterns."]
    }


def test_unknown_option_is_named_with_the_allowed_ones():
    assert refusal(Plugin.FILES, {"paths": ["/srv"], "one_file_system": True, "compress": "xz"}) == {
        "options": ["Unknown option(s): compress, one_file_system. Allowed: exclude, paths."]
    }


def test_missing_option_is_named():
    assert refusal(Plugin.FILES, {"exclude": ["*.tmp"]}) == {"options": ["Missing option(s): paths."]}


# --- postgresql / mysql ------------------------------------------------------------------------


DATABASE_NAME_HELP = "Use letters, digits, _, $ or - (at most 63 characters) for the database name."


@pytest.mark.parametrize("plugin", [Plugin.POSTGRESQL, Plugin.MYSQL])
@pytest.mark.parametrize(
    "database",
    ["x; DROP", "orders db", "-Fc", "../orders", "", "a" * 64, 7, "orders\n"],
    ids=["sql", "space", "option", "path", "empty", "too-long", "number", "trailing-newline"],
)
def test_database_name_must_come_from_a_safe_alphabet(plugin, database):
    assert refusal(plugin, {"database": database}) == {"database": [DATABASE_NAME_HELP]}


@pytest.mark.parametrize(
    "port",
    [0, 65536, -1, "5432", True, 5432.0],
    ids=["zero", "too-high", "negative", "string", "bool", "float"],
)
def test_database_port_must_be_a_number_from_1_to_65535(port):
    assert refusal(Plugin.POSTGRESQL, {"database": "orders", "port": port}) == {
        "port": ["The port must be a number from 1 to 65535."]
    }


@pytest.mark.parametrize(
    "host",
    ["-oProxyCommand=sh", "db01 example", "db01.example.com.", "", "db01;rm", "db01.example.com\n"],
    ids=["option", "space", "trailing-dot", "empty", "semicolon", "trailing-newline"],
)
def test_database_host_must_be_a_host_name_or_address(host):
    assert refusal(Plugin.MYSQL, {"database": "orders", "host": host}) == {
        "host": ["Enter a host name or IP address."]
    }


@pytest.mark.parametrize(
    "user", ["-U", "back up", "", "backup\n"], ids=["option", "space", "empty", "newline"]
)
def test_database_user_must_come_from_a_safe_alphabet(user):
    assert refusal(Plugin.POSTGRESQL, {"database": "orders", "user": user}) == {
        "user": ["Use letters, digits, _, ., @ or - for the database user."]
    }


def test_database_plugin_refuses_a_password_option():
    """Passwords belong in the server's .pgpass or option file, never in the catalog."""
    message = refusal(Plugin.POSTGRESQL, {"database": "orders", "password": "hunter2"})["options"][0]
    assert message.startswith("Unknown option(s): password.")


# --- command -------------------------------------------------------------------------------------


def command(backup_argv, restore_argv=(LOAD, "{target}")) -> dict:
    return {"backup_argv": backup_argv, "restore_argv": list(restore_argv)}


ARGV_HELP = "Give the command as a list of arguments, program first."


@pytest.mark.parametrize(
    "argv",
    [f"{DUMP} --out {{target}}", [], [DUMP, 5], None],
    ids=["shell-string", "empty", "non-string-argument", "null"],
)
def test_command_must_be_a_list_of_arguments(argv):
    assert refusal(Plugin.COMMAND, command(argv)) == {"backup_argv": [ARGV_HELP]}


def test_command_program_must_be_an_absolute_path():
    assert refusal(Plugin.COMMAND, command(["app-dump", "{target}"])) == {
        "backup_argv": ["'app-dump' is not absolute: it must start with /."]
    }


def test_restore_command_is_checked_like_the_backup_command():
    assert refusal(Plugin.COMMAND, command([DUMP], restore_argv=["load"])) == {
        "restore_argv": ["'load' is not absolute: it must start with /."]
    }


@pytest.mark.parametrize(
    ("argument", "unknown"),
    [
        ("--out={oops}", "['oops']"),
        ("{target.__class__}", "['target.__class__']"),
        ("{target[0]}", "['target[0]']"),
        ("{0}", "['0']"),
        ("{}", "['']"),
    ],
    ids=["unknown-name", "attribute", "index", "positional", "anonymous"],
)
def test_command_placeholders_are_limited_to_target_job_id_and_client(argument, unknown):
    assert refusal(Plugin.COMMAND, command([DUMP, argument])) == {
        "backup_argv": [f"Unknown placeholder(s) {unknown}; use ['client', 'job_id', 'target']."]
    }


@pytest.mark.parametrize(
    ("argument", "named"),
    [("{target:{oops}}", "oops"), ("{target!x}", "x")],
    ids=["placeholder-in-format-spec", "unknown-conversion"],
)
def test_placeholder_the_agent_could_not_fill_is_refused(argument, named):
    """Accepted here, these fail only on the server, when the agent formats the argument
    ('{target:{oops}}' with KeyError 'oops', '{target!x}' with "Unknown conversion specifier x")."""
    message = refusal(Plugin.COMMAND, command([DUMP, argument]))["backup_argv"][0]
    assert named in message


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ("--out={", "Single '{' encountered in format string"),
        ("}", "Single '}' encountered in format string"),
    ],
    ids=["open-brace", "close-brace"],
)
def test_malformed_placeholder_says_where(argument, reason):
    assert refusal(Plugin.COMMAND, command([DUMP, argument])) == {"backup_argv": [f"{argument!r}: {reason}"]}


def test_command_needs_both_backup_and_restore():
    assert refusal(Plugin.COMMAND, {"backup_argv": [DUMP]}) == {
        "options": ["Missing option(s): restore_argv."]
    }


# --- any plugin ----------------------------------------------------------------------------------


def test_unknown_plugin_is_refused():
    assert refusal("rsync", {"paths": ["/srv"]}) == {"plugin": ["Unknown plugin 'rsync'."]}


@pytest.mark.parametrize("options", [["/srv"], "paths=/srv", None], ids=["list", "string", "null"])
def test_options_must_be_a_json_object(options):
    assert refusal(Plugin.FILES, options) == {"options": ["Options must be a JSON object."]}


def test_client_validation_uses_the_plugin_rules():
    client = factories.BackupClientFactory.build(
        plugin=Plugin.POSTGRESQL, options={"database": "x; DROP"}, agent=None
    )
    with pytest.raises(ValidationError) as excinfo:
        client.clean()
    assert excinfo.value.message_dict == {"options": [f"database: {DATABASE_NAME_HELP}"]}
