"""The pieces every raw-SQL statement of `jobs` is written with: the connection, names
quoted from the models' `_meta` (never a table or column name typed by hand),
parameter markers, and values converted by the model's own fields exactly as the ORM
would convert them. Values only ever travel as parameters.

The hot paths that bypass the ORM use them: the transition fast path
(`jobs.transitions_sql`), the claim (`jobs.claiming`), the attempt rows
(`jobs.attempts`), the bulk insert of a batch's jobs (`jobs.services.create_jobs`), the
status counts clients poll (`jobs.counts`) and the synthetic history of `jobs.load`.
"""

import sqlite3
from collections.abc import Sized
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models

# Rows (or ids of an IN list) per statement where work runs in chunks (cancel a batch of
# 100,000 jobs...): SQLite refuses more than 32,766 bound parameters and PostgreSQL
# plans long IN lists badly.
CHUNK = 500


def default_connection() -> Any:
    """The default database's connection itself rather than the `django.db.connection`
    proxy, whose every attribute access is a thread-local lookup: the hot paths make
    hundreds of them."""
    return connections[DEFAULT_DB_ALIAS]


def table(model: type[models.Model], conn: Any) -> str:
    """`model`'s table name, quoted for `conn`."""
    return conn.ops.quote_name(model._meta.db_table)


def column(model: type[models.Model], name: str, conn: Any) -> str:
    """The column of `model`'s field `name` (a foreign key's `_id` column for its
    name), quoted for `conn`."""
    return conn.ops.quote_name(model._meta.get_field(name).column)


def marks(values: int | Sized) -> str:
    """`%s, %s, ...`: one parameter marker per value (or `values` markers, given a
    number), for an IN list or a row."""
    count = values if isinstance(values, int) else len(values)
    return ", ".join(["%s"] * count)


def rows(width: int, count: int) -> str:
    """`(%s, %s), (%s, %s), ...`: `count` rows of `width` markers, for INSERT ... VALUES."""
    return ", ".join([f"({marks(width)})"] * count)


def typed_mark(field: models.Field, conn: Any) -> str:
    """A parameter marker for `field`, cast to its column type on PostgreSQL (where a
    row of parameters in a derived table has no column types of its own)."""
    if conn.vendor != "postgresql":
        return "%s"
    return f"%s::{field.db_type(conn)}"


def db_value(field: models.Field, value: Any, conn: Any, *, save: bool = True) -> Any:
    """`value` as the ORM would send it for `field`: `save` for a value written
    (SET, INSERT), else for one compared (WHERE). On a foreign key, a model instance
    stands for its primary key (as in `update(worker=w)` and `Q(worker=w)`) and None
    is NULL."""
    if field.is_relation:
        if value is None:
            return None
        if isinstance(value, models.Model):
            value = value.pk
        field = field.target_field
    return field.get_db_prep_save(value, conn) if save else field.get_db_prep_value(value, conn)


def supports_returning(conn: Any) -> bool:
    """Whether `conn` runs `UPDATE ... RETURNING` (PostgreSQL, SQLite >= 3.35)."""
    if conn.vendor == "postgresql":
        return True
    return conn.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)


def filter_rows_found_by_key(condition: str, conn: Any) -> str:
    """`condition`, for a statement that names its rows by primary key (`id IN (...) AND
    <condition>`): on PostgreSQL written `(condition) IS TRUE`, which no index matches,
    so the rows are found by the key whatever the planner believes about the
    condition's columns. (Without it, a fresh batch's million RUNNABLE rows, which the
    statistics do not know of yet, made the planner walk the status index through all
    of them to update 128 jobs: half a second.) Elsewhere `condition` unchanged."""
    return f"({condition}) IS TRUE" if conn.vendor == "postgresql" else condition
