"""Catalog tables: revision counter, segments, segment references, computed attributes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    """Create the catalog's tables and its revision row."""
    revision_table = op.create_table(
        "catalog_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_catalog_revision_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_catalog_revision"),
    )
    op.bulk_insert(revision_table, [{"id": 1, "revision": 0}])

    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("rules", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_progress", sa.Float(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("type IN ('DYNAMIC', 'STATIC')", name="ck_segments_type"),
        sa.CheckConstraint("status IN ('BUILDING', 'ACTIVE', 'FAILED')", name="ck_segments_status"),
        sa.CheckConstraint(
            "status_progress >= 0 AND status_progress <= 1", name="ck_segments_progress"
        ),
        sa.CheckConstraint("version >= 1", name="ck_segments_version"),
        sa.CheckConstraint("size >= 0", name="ck_segments_size"),
        sa.PrimaryKeyConstraint("id", name="pk_segments"),
    )
    op.create_index(
        "uq_segments_live_name",
        "segments",
        ["name"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index("ix_segments_created_at_id", "segments", ["created_at", "id"])
    op.create_index("ix_segments_revision", "segments", ["revision"])

    op.create_table(
        "segment_references",
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=256), nullable=False),
        sa.Column("target_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["segments.id"], name="fk_segment_references_source_id_segments"
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["segments.id"], name="fk_segment_references_target_id_segments"
        ),
        sa.PrimaryKeyConstraint("source_id", "reference", name="pk_segment_references"),
    )
    op.create_index("ix_segment_references_target_id", "segment_references", ["target_id"])

    op.create_table(
        "attributes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("aggregate", sa.String(length=16), nullable=False),
        sa.Column("property", sa.Text(), nullable=True),
        sa.Column("where", sa.JSON(), nullable=False),
        sa.Column("within", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("version >= 1", name="ck_attributes_version"),
        sa.PrimaryKeyConstraint("id", name="pk_attributes"),
    )
    op.create_index(
        "uq_attributes_live_name",
        "attributes",
        ["name"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index("ix_attributes_created_at_id", "attributes", ["created_at", "id"])
    op.create_index("ix_attributes_revision", "attributes", ["revision"])


def downgrade() -> None:
    """Drop the catalog's tables."""
    op.drop_table("attributes")
    op.drop_table("segment_references")
    op.drop_table("segments")
    op.drop_table("catalog_revision")
