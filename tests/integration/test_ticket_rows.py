"""The ticket's INSERT on both databases: the quota inside the statement, never passed by tickets sent at once,
and a dropped connection retried."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.migrate import upgrade
from app.repository import bytes_in_use
from app.ticket_rows import APPLICATION_NAME, TicketRows
from tests.conftest import _postgres_schema_url, postgres_available


def ticket_row(owner: str, size: int) -> dict[str, Any]:
    now, upload_id = datetime.now(UTC), str(uuid.uuid4())
    return {
        "id": upload_id,
        "owner_id": owner,
        "kind": "workout_photo",
        "status": "pending",
        "visibility": "private",
        "declared_type": "image/jpeg",
        "declared_size": size,
        "filename": "IMG_0001.jpg",
        "context": {"workout_id": "w-1"},
        "document_id": None,
        "temp_key": f"temp/{upload_id}",
        "ticket_expires_at": now + timedelta(minutes=10),
        "multipart_upload_id": None,
        "part_size": None,
        "ai_processed": False,
        "created_at": now,
        "updated_at": now,
    }


def stored(engine: Any, owner: str) -> list[tuple[str, int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, declared_size, context FROM uploads WHERE owner_id = :owner ORDER BY 2"),
            {"owner": owner},
        )
        return [(status, size, str(context)) for status, size, context in rows]


def test_rows_are_inserted_until_the_quota_refuses(database_url) -> None:
    engine = create_engine(database_url)
    rows, owner = TicketRows(engine), str(uuid.uuid4())
    try:
        assert rows.insert(ticket_row(owner, 600), 600, quota=1000)
        assert not rows.insert(ticket_row(owner, 500), 500, quota=1000)  # 600 in flight + 500 > 1000
        assert rows.insert(ticket_row(owner, 400), 400, quota=1000)  # exactly the quota
        assert rows.insert(ticket_row(owner, 5000), 5000, quota=None)  # no quota configured
        assert [(status, size) for status, size, _ in stored(engine, owner)] == [
            ("pending", 400),
            ("pending", 600),
            ("pending", 5000),
        ]
        assert "w-1" in stored(engine, owner)[0][2]  # the context is stored as JSON
    finally:
        rows.dispose()
        engine.dispose()


def send_together(rows: TicketRows, owner: str, senders: int) -> list[bool]:
    """`senders` tickets of 600 bytes for `owner` (quota 1000), released at once; which got in."""
    start, inserted = threading.Barrier(senders), []

    def send() -> None:
        row = ticket_row(owner, 600)
        start.wait()
        inserted.append(rows.insert(row, 600, quota=1000))

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return inserted


def test_tickets_sent_at_once_never_share_the_room_left_for_one(database_url) -> None:
    """Six tickets of one owner released together, whose quota has room for one: one is inserted, every time.
    (On PostgreSQL, before the count took a lock on the owner, more than one got in within the first rounds.)"""
    engine = create_engine(database_url, pool_size=6)
    rows, senders = TicketRows(engine), 6
    try:
        # A first round opens every sender's connection, so the rounds below start together.
        send_together(rows, str(uuid.uuid4()), senders)
        for _ in range(25):
            owner = str(uuid.uuid4())
            assert sorted(send_together(rows, owner, senders)) == [False] * (senders - 1) + [True]
            assert [size for _, size, _ in stored(engine, owner)] == [600]
    finally:
        rows.dispose()
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A migrated schema in PostgreSQL: the driver path and its pool exist only there."""
    for url in _postgres_schema_url():
        upgrade(url)
        yield url


def terminate_ticket_connections(engine: Any) -> int:
    """Kill the ticket pool's server sessions (how many), as a PostgreSQL restart kills every connection."""
    with engine.connect() as admin:
        return admin.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": APPLICATION_NAME},
        ).scalar_one()


@pytest.mark.skipif(not postgres_available(), reason="needs the PostgreSQL server the CI job provides")
def test_a_dropped_connection_is_replaced_and_the_row_inserted_once(postgres_url) -> None:
    engine = create_engine(postgres_url)
    rows, owner = TicketRows(engine), str(uuid.uuid4())
    try:
        assert rows.insert(ticket_row(owner, 100), 100, quota=None)  # the pool now holds a connection
        terminated = terminate_ticket_connections(engine)  # as a PostgreSQL restart would, under the pool
        assert terminated >= 1
        assert rows.insert(ticket_row(owner, 200), 200, quota=10_000)
        assert [size for _, size, _ in stored(engine, owner)] == [100, 200]
    finally:
        rows.dispose()
        engine.dispose()


def test_after_a_restart_kills_every_pooled_connection_the_next_tickets_all_pass(postgres_url) -> None:
    """A PostgreSQL restart leaves the pool full of dead connections: not one ticket after it may fail."""
    engine = create_engine(postgres_url)
    rows, owner = TicketRows(engine), str(uuid.uuid4())
    try:
        with engine.connect() as blocker:  # four tickets wait on the table's lock, each on its own connection
            blocker.execute(text("LOCK TABLE uploads IN EXCLUSIVE MODE"))
            waiting = [
                threading.Thread(target=rows.insert, args=(ticket_row(owner, size), size, None))
                for size in (1, 2, 3, 4)
            ]
            for thread in waiting:
                thread.start()
            blocker.commit()
        for thread in waiting:
            thread.join(30)
        terminated = terminate_ticket_connections(engine)
        assert terminated >= 4
        for size in (5, 6, 7, 8):  # each one the pool hands a dead connection first
            assert rows.insert(ticket_row(owner, size), size, quota=None)
        assert [size for _, size, _ in stored(engine, owner)] == [1, 2, 3, 4, 5, 6, 7, 8]
    finally:
        rows.dispose()
        engine.dispose()


@pytest.mark.skipif(not postgres_available(), reason="needs the PostgreSQL server the CI job provides")
def test_the_quota_function_counts_as_the_repository_does(postgres_url) -> None:
    """`upload_bytes_in_use` (migration 0007) and `repository.bytes_in_use` hold the same rule, twice."""
    engine = create_engine(postgres_url)
    owner = str(uuid.uuid4())
    statuses = ["pending", "uploaded", "processing", "ready", "rejected", "failed", "expired", "deleted"]
    try:
        with engine.begin() as connection:
            for number, status in enumerate(statuses, start=1):
                row = ticket_row(owner, 1000 * number) | {"status": status}
                columns = ", ".join(row)
                connection.execute(
                    text(f"INSERT INTO uploads ({columns}, bytes) VALUES (:{', :'.join(row)}, :bytes)"),
                    row | {"context": "{}", "bytes": 10 * number if status != "expired" else None},
                )
        with Session(engine) as session:
            counted = bytes_in_use(session, owner)
        with engine.begin() as connection:
            function = connection.execute(text("SELECT upload_bytes_in_use(:o)"), {"o": owner}).scalar_one()
        # In flight (pending, uploaded, processing): their declared sizes; ready: the bytes stored.
        assert counted == function == 1000 + 2000 + 3000 + 40
    finally:
        engine.dispose()
