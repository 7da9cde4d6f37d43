"""Hand-written SQL for the few paths every labeler hits on every item (token auth, lease, submit).

Building a query through the ORM costs about half a millisecond of CPU per statement on a small
server, several times what PostgreSQL spends running it, so these paths send fixed SQL through
Django's own connection (same transaction, same error translation) and turn rows into model
instances with the converters the ORM applies, so both backends (PostgreSQL, SQLite) give the
same objects. Everything else uses the ORM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

M = TypeVar("M", bound=Model)


def _connection() -> BaseDatabaseWrapper:
    return connections[DEFAULT_DB_ALIAS]


def _cursor(connection: BaseDatabaseWrapper) -> Any:
    """A cursor on Django's connection. On PostgreSQL it binds parameters on the server, so that
    psycopg can prepare these statements (``prepare_threshold`` in the settings): PostgreSQL then
    plans each of them once per connection instead of on every call, which is most of its work
    for statements this small. The ORM keeps Django's client-side binding, and so do these while
    queries are being logged (``DEBUG``, query-count checks), so the log shows the values."""
    if connection.vendor != "postgresql" or connection.queries_logged:
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.validate_thread_sharing()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    cursor: Any = ServerBindingCursor
    return connection.make_cursor(cursor(connection.connection))


def fetch_one(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[Any, ...] | None:
    """The first row of ``sql``, or ``None``."""
    with _cursor(_connection()) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def fetch_all(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    """Every row of ``sql``."""
    with _cursor(_connection()) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
    """Run a write; returns the number of rows it touched."""
    with _cursor(_connection()) as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def vendor() -> str:
    """``postgresql`` or ``sqlite``: where the SQL of a statement differs between the two."""
    return _connection().vendor


def db_datetime(value: Any) -> Any:
    """A datetime as a parameter of hand-written SQL (SQLite stores text in Django's format)."""
    return _connection().ops.adapt_datetimefield_value(value)


def fits_id(value: object) -> bool:
    """Whether ``value`` can be a primary key (a 64-bit integer): ids from URLs are checked first,
    because SQLite refuses a bigger number outright, where the ORM would find nothing."""
    return isinstance(value, int) and -(2**63) <= value < 2**63


def literal(value: str) -> str:
    """A constant of the code (a status, never input) as an SQL string literal. Written into the
    statement rather than bound, it lets the planner match partial indexes in prepared plans."""
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a plain constant: {value!r}")
    return f"'{value}'"


def table(model: type[Model]) -> str:
    """The quoted table name of ``model``."""
    return _connection().ops.quote_name(model._meta.db_table)


@cache
def columns(model: type[Model], alias: str) -> str:
    """``alias."col", ...`` for every concrete field of ``model``, in the order ``instance`` reads."""
    quote = _connection().ops.quote_name
    return ", ".join(f"{alias}.{quote(str(field.column))}" for field in model._meta.concrete_fields)


Converter = Callable[[Any, Any, Any], Any]


@cache
def _layout(model: type[Model], vendor: str) -> tuple[list[str], list[tuple[int, list[Converter], Any]]]:
    """Field names in column order and, for the columns that need them, the ORM's converters."""
    del vendor  # part of the cache key: converters differ between backends
    connection = _connection()
    names, converted = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        names.append(field.attname)
        col = field.cached_col
        found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
        if found:
            converted.append((index, found, col))
    return names, converted


def instance(model: type[M], row: Sequence[Any], start: int = 0) -> tuple[M, int]:
    """A ``model`` instance from ``row[start:]`` (laid out as ``columns(model, ...)``), as the ORM
    would have built it; returns it and the index of the first column after it."""
    connection = _connection()
    names, converted = _layout(model, connection.vendor)
    end = start + len(names)
    values = list(row[start:end])
    for index, found, col in converted:
        value = values[index]
        for convert in found:
            # Backend converters are bound to the connection that looked them up; hand them this
            # thread's, which is the one that read the row.
            value = convert(value, col, connection)
        values[index] = value
    return model.from_db(DEFAULT_DB_ALIAS, names, values), end


def saved(obj: M) -> M:
    """Mark an instance built in Python from values just written as loaded from the database."""
    obj._state.adding = False
    obj._state.db = DEFAULT_DB_ALIAS
    return obj
