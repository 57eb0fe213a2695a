"""Querysets compiled to SQL once per process, and prepared once per connection on PostgreSQL.

Django turns a queryset into SQL at every evaluation, and PostgreSQL plans it
at every execution. For the agent's token lookup (the agent and its open jobs,
a join) that costs far more than the answer: measured in bench/poll.py, about
0.4 ms of Python to compile and 1 ms of PostgreSQL to plan, against 0.1 ms to
execute. It runs for every request of every agent, so it is compiled once per
process from an ordinary queryset (the same SQL, columns and converters Django
would use) and, on PostgreSQL, prepared once per connection (``PREPARE``) and
then only executed. SQLite's driver keeps its own statement cache.

Behind a pooler that hands each transaction another server connection
(PgBouncer in transaction mode), a prepared statement may not be there:
``DB_PREPARED_STATEMENTS=false`` turns preparing off (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple  # constants in place, a variable's position holds its placeholder
    converters: dict
    name: str  # of the prepared statement (PostgreSQL)


#: The prepared statements of each PostgreSQL connection (a new connection starts with none).
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CompiledQuery:
    """``build()`` compiled once per database alias; ``rows(values)`` runs it.

    ``variables`` are placeholder values ``build`` puts in the query; ``rows`` binds
    the caller's values in their place, in the same order. Each must occur exactly
    once among the compiled parameters: checked at compile time, so a queryset
    whose parameters move fails loudly instead of binding a value to the wrong
    column. Every other parameter is a constant of the query.
    """

    def __init__(self, build: Callable[[], QuerySet], variables: Sequence[str]):
        self._build = build
        self._variables = tuple(variables)
        self._by_alias: dict[str, _Compiled] = {}

    def _compiled(self, alias: str) -> _Compiled:
        compiled = self._by_alias.get(alias)
        if compiled is None:
            compiled = self._compile(alias)
            self._by_alias[alias] = compiled
        return compiled

    def _compile(self, alias: str) -> _Compiled:
        compiler = self._build().query.get_compiler(alias)
        sql, params = compiler.as_sql()
        params = tuple(params)
        if sorted(value for value in params if value in self._variables) != sorted(self._variables):
            raise ValueError(f"compiled with {params!r}: each of {self._variables!r} must occur once")
        columns = [column for column, _, _ in compiler.select]
        return _Compiled(
            sql=sql,
            params=params,
            converters=compiler.get_converters(columns),
            name="bp_" + hashlib.sha256(sql.encode()).hexdigest()[:16],
        )

    def _prepare(self, compiled: _Compiled, cursor) -> None:
        """PREPARE the query on this PostgreSQL connection: constants inlined, variables as $1, $2…

        Inlined because the planner must see them, as it does in the unprepared query:
        a partial index (``state IN ('queued', 'running')``) is usable only for a constant.
        """
        parts = compiled.sql.replace("%%", "\0").split("%s")
        sql = [parts[0]]
        for value, part in zip(compiled.params, parts[1:], strict=True):
            if value in self._variables:
                sql.append(f"${self._variables.index(value) + 1}")
            else:
                sql.append(cursor.mogrify("%s", [value]).decode())
            sql.append(part)
        cursor.execute(f"PREPARE {compiled.name} AS " + "".join(sql).replace("\0", "%"))

    def rows(self, values: Sequence, *, using: str = "default") -> list[tuple]:
        compiled = self._compiled(using)
        connection = connections[using]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql" and settings.DB_PREPARED_STATEMENTS:
                raw = connection.connection
                prepared = _prepared.setdefault(raw, set())
                if compiled.name not in prepared:
                    self._prepare(compiled, cursor)
                    prepared.add(compiled.name)
                cursor.execute(f"EXECUTE {compiled.name} ({', '.join(['%s'] * len(values))})", values)
            else:
                bound = dict(zip(self._variables, values, strict=True))
                cursor.execute(compiled.sql, [bound.get(value, value) for value in compiled.params])
            rows = cursor.fetchall()
        return [self._convert(row, compiled.converters, connection) for row in rows]

    @staticmethod
    def _convert(row: tuple, converters: dict, connection) -> tuple:
        if not converters:
            return row
        row = list(row)
        for position, (functions, expression) in converters.items():
            value = row[position]
            for function in functions:
                value = function(value, expression, connection)
            row[position] = value
        return tuple(row)
