"""Announce each new catalog revision on the ``am_catalog`` channel (PostgreSQL only).

A trigger on the revision row calls ``pg_notify`` with the new revision as payload, in the
writer's own transaction: listeners hear of a change when, and only when, it commits. SQLite
has no notifications; its readers poll the revision.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the notifying function and its trigger."""
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION catalog_revision_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('am_catalog', CAST(NEW.revision AS text));
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER catalog_revision_notify AFTER UPDATE OF revision ON catalog_revision "
        "FOR EACH ROW EXECUTE FUNCTION catalog_revision_notify()"
    )


def downgrade() -> None:
    """Drop the trigger and its function."""
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER catalog_revision_notify ON catalog_revision")
    op.execute("DROP FUNCTION catalog_revision_notify()")
