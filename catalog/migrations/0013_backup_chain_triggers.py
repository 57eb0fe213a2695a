"""The database keeps chains whole (docs/incremental.md, "Enforced by the database").

Triggers on ``catalog_backup``, on SQLite and PostgreSQL alike:

- ``backup_base_stays_available``: a point cannot leave ``available`` while an ``available``
  point has it as its base;
- ``backup_base_must_be_available``: a point cannot be inserted ``available``, or become
  ``available`` (or change its base while available), while its base is not ``available``.

Deleting a base's row is refused by the foreign keys (``base``, ``full``: PROTECT).

PostgreSQL checks after each statement (row triggers ``AFTER``, fired at the statement's
end), so one statement may expire a whole chain; it locks the base row it relies on
(``FOR SHARE``), so two transactions cannot each see the other's old state and break the
rule together. SQLite checks row by row, in the statement's order (writers are serialised
there anyway). Retention expires leaves first either way.

SQLite drops a table's triggers when a migration rebuilds it (``ALTER`` by copy): a later
migration that does so for ``catalog_backup`` must create these again.
tests/catalog/test_chain_enforcement.py fails if they are missing.
"""

from django.db import migrations

# The states are written out: a migration is history and must not follow later code.
SQLITE_CREATE = [
    """
    CREATE TRIGGER backup_base_stays_available
    BEFORE UPDATE OF status ON catalog_backup
    FOR EACH ROW
    WHEN OLD.status = 'available' AND NEW.status <> 'available'
      AND EXISTS (SELECT 1 FROM catalog_backup AS d WHERE d.base_id = NEW.id AND d.status = 'available')
    BEGIN
      SELECT RAISE(ABORT, 'backup_base_stays_available: an available recovery point builds on this one');
    END
    """,
    """
    CREATE TRIGGER backup_base_must_be_available_insert
    BEFORE INSERT ON catalog_backup
    FOR EACH ROW
    WHEN NEW.status = 'available' AND NEW.base_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM catalog_backup AS b WHERE b.id = NEW.base_id AND b.status = 'available')
    BEGIN
      SELECT RAISE(ABORT, 'backup_base_must_be_available: the base of an available recovery point must be available');
    END
    """,
    """
    CREATE TRIGGER backup_base_must_be_available_update
    BEFORE UPDATE OF status, base_id ON catalog_backup
    FOR EACH ROW
    WHEN NEW.status = 'available' AND NEW.base_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM catalog_backup AS b WHERE b.id = NEW.base_id AND b.status = 'available')
    BEGIN
      SELECT RAISE(ABORT, 'backup_base_must_be_available: the base of an available recovery point must be available');
    END
    """,
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS backup_base_stays_available",
    "DROP TRIGGER IF EXISTS backup_base_must_be_available_insert",
    "DROP TRIGGER IF EXISTS backup_base_must_be_available_update",
]

POSTGRESQL_CREATE = [
    """
    CREATE FUNCTION catalog_backup_chain_whole() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND OLD.status = 'available' AND NEW.status <> 'available' THEN
        IF EXISTS (SELECT 1 FROM catalog_backup AS d WHERE d.base_id = NEW.id AND d.status = 'available') THEN
          RAISE EXCEPTION 'backup_base_stays_available: an available recovery point builds on backup %', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
        END IF;
      END IF;
      IF NEW.status = 'available' AND NEW.base_id IS NOT NULL THEN
        -- FOR SHARE: a concurrent expiry of the base waits for this transaction, and its own
        -- check then sees this point.
        PERFORM 1 FROM catalog_backup AS b WHERE b.id = NEW.base_id AND b.status = 'available' FOR SHARE;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'backup_base_must_be_available: the base of backup % (backup %) is not available',
            NEW.id, NEW.base_id
            USING ERRCODE = 'integrity_constraint_violation';
        END IF;
      END IF;
      RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER backup_chain_whole
    AFTER INSERT OR UPDATE OF status, base_id ON catalog_backup
    FOR EACH ROW EXECUTE FUNCTION catalog_backup_chain_whole()
    """,
]
POSTGRESQL_DROP = [
    "DROP TRIGGER IF EXISTS backup_chain_whole ON catalog_backup",
    "DROP FUNCTION IF EXISTS catalog_backup_chain_whole()",
]

STATEMENTS = {
    "sqlite": (SQLITE_CREATE, SQLITE_DROP),
    "postgresql": (POSTGRESQL_CREATE, POSTGRESQL_DROP),
}


def _run(schema_editor, which: int) -> None:
    statements = STATEMENTS.get(schema_editor.connection.vendor)
    if statements is None:
        raise NotImplementedError(
            f"Chain triggers exist for SQLite and PostgreSQL only, not {schema_editor.connection.vendor}."
        )
    for statement in statements[which]:
        schema_editor.execute(statement, params=None)  # no placeholders: "%" is PL/pgSQL's


def create_triggers(apps, schema_editor):
    _run(schema_editor, 0)


def drop_triggers(apps, schema_editor):
    _run(schema_editor, 1)


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0012_backup_levels"),
    ]

    operations = [
        migrations.RunPython(create_triggers, drop_triggers, elidable=False),
    ]
