"""Small SQL building blocks the report queries share, for PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import datetime

from django.db import connections, models
from django.db.models import F, Func, Value
from django.db.models.functions import Coalesce, Greatest, Least


class SecondsBetween(Func):
    """``end − start`` in seconds, as a float.

    The two databases disagree on date arithmetic: PostgreSQL subtracts
    timestamps into an interval, SQLite stores text and needs julianday().
    """

    arity = 2
    output_field = models.FloatField()

    def __init__(self, end, start, **extra):
        super().__init__(end, start, **extra)

    def _parts(self, compiler):
        end_sql, end_params = compiler.compile(self.source_expressions[0])
        start_sql, start_params = compiler.compile(self.source_expressions[1])
        return end_sql, start_sql, (*end_params, *start_params)

    def as_sql(self, compiler, connection, **extra):
        # float8, not numeric: the sums run over millions of rows.
        end_sql, start_sql, params = self._parts(compiler)
        return f"date_part('epoch', {end_sql} - {start_sql})", params

    def as_sqlite(self, compiler, connection, **extra):
        end_sql, start_sql, params = self._parts(compiler)
        return f"((julianday({end_sql}) - julianday({start_sql})) * 86400.0)", params


def moment(value: datetime) -> Value:
    return Value(value, output_field=models.DateTimeField())


def held_seconds(start: datetime, end: datetime, *, taken: str = "taken_at", deleted: str = "deleted_at"):
    """Seconds of [start, end) during which a backup was held: from taken_at until deleted_at (or end).

    Greatest/Least get no NULL: on SQLite they return NULL if any argument is.
    """
    held_from = Greatest(F(taken), moment(start))
    held_until = Least(Coalesce(F(deleted), moment(end)), moment(end))
    return Greatest(SecondsBetween(held_until, held_from), Value(0.0), output_field=models.FloatField())


def grouped_sum(queryset: models.QuerySet, key: str, column: str) -> dict:
    """``{key: SUM(column)}`` over ``queryset``, whose ``column`` may be computed by a window function.

    SQL cannot aggregate a window function in the SELECT that computes it, and the
    ORM cannot GROUP BY over a subquery in FROM: this wraps the ORM's own SQL for
    ``queryset`` in ``SELECT key, SUM(column) … GROUP BY key``. ``key`` and
    ``column`` are names from our code, never from a request.
    """
    if not (key.isidentifier() and column.isidentifier()):
        raise ValueError(f"not a column name: {key!r}, {column!r}")
    sql, params = queryset.order_by().values(key, column).query.sql_with_params()
    query = f'SELECT _w."{key}", SUM(_w."{column}") FROM ({sql}) _w GROUP BY _w."{key}"'  # noqa: S608 - names checked above, values are parameters
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(query, params)
        return dict(cursor.fetchall())
