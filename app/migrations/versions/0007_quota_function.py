"""the quota check's function: an owner's bytes in use, counted after a per-owner lock

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 12:40:00

A ticket's INSERT checks the quota in the same statement (`app.ticket_rows`). Under PostgreSQL's READ
COMMITTED a statement sees the database as it was when it started, so two tickets of one owner sent at once
each counted the other's row as absent and both passed: 6 concurrent one-ticket-quota requests got more than
one ticket in 131 of 150 trials. This function first takes a transaction-scoped advisory lock on the owner,
then sums; being VOLATILE, its SUM runs in a fresh snapshot taken after the lock, which sees the row of the
ticket that held the lock before (committed when it released it). The statement that calls it stays one
round trip; only tickets of the same owner wait for each other.

The sum is `app.repository.bytes_in_use`'s rule (stored bytes of ready media, declared size of uploads in
flight); `tests/integration/test_ticket_rows.py` checks that both count alike. SQLite (`broker dev`) has one
writer at a time and needs no such function.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# PL/pgSQL rather than SQL: PostgreSQL (before 18) plans a SQL function's statements again on every call,
# which cost a ticket ~50 µs more of PostgreSQL's CPU than the plain sum; PL/pgSQL keeps its plans.
CREATE = """
CREATE FUNCTION upload_bytes_in_use(owner varchar) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('upload-quota:' || owner, 0));
    RETURN (
        SELECT coalesce(sum(
            CASE
                WHEN status = 'ready' THEN coalesce(bytes, 0)
                WHEN status IN ('pending', 'uploaded', 'processing') THEN declared_size
                ELSE 0
            END
        ), 0)::bigint
        FROM uploads
        WHERE owner_id = owner
    );
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION upload_bytes_in_use(varchar)")
