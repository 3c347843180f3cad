"""The ticket's one statement: INSERT the `pending` row, with the quota check inside it.

Tickets are the API's hottest route, and the row is most of a ticket's cost. With a quota, the check is part
of the INSERT (INSERT ... SELECT ... WHERE bytes in use + requested <= quota): one round trip. Bytes in use are
counted as `repository.bytes_in_use` counts them: stored bytes of ready media plus the declared size of
uploads still in flight. Two tickets of one owner sent at once must not both fit in the room left for one:
on PostgreSQL the count is the `upload_bytes_in_use` function (migration 0007), which locks the owner first
and counts in a snapshot taken after the lock; SQLite has one writer at a time.

On PostgreSQL the statement is compiled once per process and run straight on the driver, over a pool of
autocommit connections of its own: no per-request compile or result machinery, no BEGIN/COMMIT, no rollback
when a connection goes back to the pool, no pre-ping. That takes a ticket's row from ~380 to ~130 µs of the
API's CPU (psycopg prepares the statement server-side after a few runs). A connection that dropped (a
PostgreSQL restart) discards the whole pool (a restart killed every pooled connection) and the INSERT is
retried once on a fresh one. Other databases (SQLite under
`broker dev`) run the same Core statement through SQLAlchemy.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Insert,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from app.domain.states import UploadStatus
from app.models import Upload

log = logging.getLogger(__name__)
APPLICATION_NAME = "upload-broker-tickets"  # how the ticket pool's sessions show in pg_stat_activity

_UPLOADS = Upload.__table__
# The keys of the row `issue_ticket` builds: what a ticket knows. Every other column starts NULL (or at its
# server default).
COLUMNS = (
    "id",
    "owner_id",
    "kind",
    "status",
    "visibility",
    "declared_type",
    "declared_size",
    "filename",
    "context",
    "document_id",
    "temp_key",
    "ticket_expires_at",
    "multipart_upload_id",
    "part_size",
    "ai_processed",
    "created_at",
    "updated_at",
)
_IN_FLIGHT = [s.value for s in (UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.PROCESSING)]
_IN_USE = (
    select(
        func.coalesce(
            func.sum(
                case(
                    (_UPLOADS.c.status == UploadStatus.READY.value, func.coalesce(_UPLOADS.c.bytes, 0)),
                    # OR rather than IN: an IN list is rendered per execution, OR compiles once
                    (or_(*(_UPLOADS.c.status == status for status in _IN_FLIGHT)), _UPLOADS.c.declared_size),
                    else_=0,
                )
            ),
            0,
        )
    )
    .where(_UPLOADS.c.owner_id == bindparam("owner_id"))
    .scalar_subquery()
)
# PostgreSQL: the same sum, counted after a lock on the owner, in a snapshot of its own (migration 0007).
_IN_USE_LOCKED = func.upload_bytes_in_use(bindparam("owner_id"), type_=BigInteger())
_INSERT = insert(_UPLOADS)


def _insert_within_quota(in_use: ColumnElement[Any]) -> Insert:
    """INSERT ... SELECT the row's values WHERE `in_use` + requested <= quota. RETURNING: a row back if
    inserted (rowcount is not reported for INSERT ... SELECT)."""
    values = select(*(bindparam(name, type_=_UPLOADS.c[name].type) for name in COLUMNS))
    room = in_use + bindparam("requested_bytes", type_=BigInteger()) <= bindparam(
        "quota_bytes", type_=BigInteger()
    )
    return insert(_UPLOADS).from_select(list(COLUMNS), values.where(room)).returning(_UPLOADS.c.id)


class TicketRows:
    """Inserts tickets' rows into the database behind `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._driver: _DriverStatements | None = None
        on_postgresql = engine.dialect.name == "postgresql"
        self._within_quota = _insert_within_quota(_IN_USE_LOCKED if on_postgresql else _IN_USE)
        if on_postgresql and engine.dialect.driver == "psycopg":
            self._driver = _DriverStatements(engine, self._within_quota)

    def insert(self, row: dict[str, Any], requested: int, quota: int | None) -> bool:
        """Insert `row`; with a quota, only if the owner's bytes in use leave room for `requested`.
        False when the quota refused it (nothing inserted)."""
        if self._driver is not None:
            return self._driver.insert(row, requested, quota)
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            if quota is None:
                connection.execute(_INSERT, row)
                return True
            params = {**row, "requested_bytes": requested, "quota_bytes": quota}
            return connection.execute(self._within_quota, params).first() is not None

    def dispose(self) -> None:
        if self._driver is not None:
            self._driver.dispose()


class _DriverStatements:
    """The Core statements compiled for psycopg once, run on a pool of autocommit connections."""

    def __init__(self, engine: Engine, within_quota: Insert) -> None:
        import psycopg

        self._driver_error = psycopg.Error
        self._operational_error = psycopg.OperationalError
        self._unique_violation = psycopg.errors.UniqueViolation
        # Its own pool: autocommit needs no reset when a connection comes back, and a dropped connection is
        # handled by the retry below instead of a pre-ping on every checkout.
        self._engine = create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
            pool_pre_ping=False,
            connect_args={"application_name": APPLICATION_NAME},
        )
        event.listen(self._engine, "connect", _commit_without_waiting_for_disk)
        self._plain, self._plain_constants = _compiled(
            _INSERT.values({name: bindparam(name) for name in COLUMNS})
        )
        self._within_quota, self._quota_constants = _compiled(within_quota)

    def insert(self, row: dict[str, Any], requested: int, quota: int | None) -> bool:
        params = {**row, "context": json.dumps(row["context"])}
        if quota is None:
            sql, params = self._plain, {**self._plain_constants, **params}
        else:
            sql = self._within_quota
            params = {**self._quota_constants, **params, "requested_bytes": requested, "quota_bytes": quota}
        try:
            try:
                return self._execute(sql, params)
            except self._operational_error as error:
                log.warning("database connection lost; ticket row retried once", extra={"error": str(error)})
            try:
                return self._execute(sql, params)
            except self._unique_violation:
                return True  # the first attempt was committed before its connection dropped
        except self._driver_error as error:
            # As SQLAlchemy would have raised it: the API answers a lost database with 503, the rest with 500.
            raise DBAPIError.instance(sql, params, error, self._driver_error) from error

    def _execute(self, sql: str, params: dict[str, Any]) -> bool:
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(sql, params)
            return cursor.fetchone() is not None if cursor.description else True
        except self._operational_error:
            connection.invalidate()
            # A restart of PostgreSQL kills every pooled connection, not only this one: retrying on the next
            # pooled (dead) one would answer 503 until each had been tried in turn. Start a fresh pool.
            self._engine.dispose()
            raise
        finally:
            connection.close()

    def dispose(self) -> None:
        self._engine.dispose()


def _commit_without_waiting_for_disk(dbapi_connection: Any, _record: Any) -> None:
    # A ticket's row is the one write that may be lost: should PostgreSQL crash within its WAL writer's
    # delay (~0.6 s) of the commit, the client's upload finds no record, is refused like an expired ticket,
    # and its temp object is swept. Nothing a user uploaded is at stake, and the commit stops waiting on
    # the disk's flush (PostgreSQL's documented trade-off for such transactions; it never corrupts data).
    # The other writes (promotion, versions, grants) keep synchronous commits on the main engine.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")


def _compiled(statement: Any) -> tuple[str, dict[str, Any]]:
    """psycopg's SQL for `statement` and the values of the constants it binds (the statuses of the quota
    rule); the row's own parameters are given at each execution."""
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    given = {"requested_bytes", "quota_bytes", *COLUMNS}
    constants = {name: value for name, value in compiled.params.items() if name not in given}
    return compiled.string, constants
