"""The catalog service: the one way the rest of the platform reads and writes the catalog.

Every method runs in its own transaction and returns read models, never ORM rows. Each
change takes the next catalog revision in that same transaction, so
:meth:`CatalogService.changes_since` reports exactly what changed after a revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, exc, select
from sqlalchemy.orm import Session, sessionmaker

from audience_manager.catalog import attributes, segments, store
from audience_manager.catalog.errors import CatalogError, CatalogUnavailable, Conflict, InvalidInput
from audience_manager.catalog.models import AttributeRecord, SegmentRecord
from audience_manager.catalog.pagination import DEFAULT_PAGE_SIZE, next_cursor, paginate
from audience_manager.catalog.schemas import (
    AttributeCreate,
    AttributeRead,
    CatalogChanges,
    Page,
    SegmentCreate,
    SegmentRead,
    SegmentStatus,
)

__all__ = ["CatalogService"]


class CatalogService:
    """Segments and computed attributes, stored through SQLAlchemy (SQLite or PostgreSQL).

    Raises only :class:`~audience_manager.catalog.errors.CatalogError` subclasses:
    ``NotFound``, ``Conflict``, ``InvalidInput`` and, when the database fails,
    ``CatalogUnavailable``. The database must have been migrated
    (:func:`audience_manager.catalog.migrate`).
    """

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- segments -----------------------------------------------------------------------

    def create_segment(self, data: SegmentCreate) -> SegmentRead:
        """Create a segment at version 1: ``BUILDING`` when ``DYNAMIC``, ``ACTIVE`` and
        empty when ``STATIC``. Raises ``InvalidInput``, or ``Conflict`` for a taken name."""
        with self._writing() as (session, revision):
            return segments.create_segment(session, revision, data)

    def get_segment(self, id_or_name: str) -> SegmentRead:
        """The live segment with this id (or else this name); raises ``NotFound``."""
        with self._transaction() as session:
            return store.segment_read(store.find_segment(session, id_or_name))

    def list_segments(
        self, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[SegmentRead]:
        """Live segments in creation order, ``limit`` (1 to 1000) at a time after ``cursor``."""
        query = select(SegmentRecord).where(SegmentRecord.deleted_at.is_(None))
        with self._transaction() as session:
            rows = session.scalars(paginate(query, SegmentRecord, limit, cursor)).all()
            return Page([store.segment_read(r) for r in rows[:limit]], next_cursor(rows, limit))

    def replace_segment(self, id_or_name: str, data: SegmentCreate) -> SegmentRead:
        """Replace a segment's whole definition (``PUT``).

        The version goes up by one and a ``DYNAMIC`` segment goes back to ``BUILDING``.
        The type cannot change (``InvalidInput``); a segment that others reference by name
        cannot be renamed (``Conflict``).
        """
        with self._writing() as (session, revision):
            return segments.replace_segment(session, revision, id_or_name, data)

    def delete_segment(self, id_or_name: str) -> None:
        """Delete a segment softly (the change feed reports it; the name is free again).

        Raises ``Conflict`` while another live segment references it.
        """
        with self._writing() as (session, revision):
            segments.delete_segment(session, revision, id_or_name)

    def set_status(
        self,
        segment_id: str,
        status: SegmentStatus,
        *,
        progress: float | None = None,
        reason: str | None = None,
        size: int | None = None,
        version: int | None = None,
    ) -> SegmentRead:
        """Record a segment's processing status, progress and size (the processor's call).

        ``reason`` replaces the stored one (``None`` clears it). ``ACTIVE`` sets progress
        to 1; entering ``BUILDING`` without a progress sets 0. With ``version``, a segment
        replaced since raises ``Conflict`` and is left alone. The version never changes
        here, and the revision only when the status or reason does: progress and size
        updates stay out of the change feed.
        """
        with self._transaction() as session:
            return segments.set_status(
                session,
                segment_id,
                status,
                progress=progress,
                reason=reason,
                size=size,
                version=version,
            )

    # -- computed attributes ------------------------------------------------------------

    def create_attribute(self, data: AttributeCreate) -> AttributeRead:
        """Define a computed attribute at version 1; built-in names are ``InvalidInput``
        and a taken name is a ``Conflict``."""
        with self._writing() as (session, revision):
            return attributes.create_attribute(session, revision, data)

    def get_attribute(self, name: str) -> AttributeRead:
        """The live computed attribute ``name``; raises ``NotFound`` (built-ins included)."""
        with self._transaction() as session:
            return store.attribute_read(store.find_attribute(session, name))

    def list_attributes(
        self, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page[AttributeRead]:
        """Live computed attributes in creation order, ``limit`` at a time after ``cursor``."""
        query = select(AttributeRecord).where(AttributeRecord.deleted_at.is_(None))
        with self._transaction() as session:
            rows = session.scalars(paginate(query, AttributeRecord, limit, cursor)).all()
            items = [store.attribute_read(r) for r in rows[:limit]]
            return Page(items, next_cursor(rows, limit))

    def replace_attribute(self, name: str, data: AttributeCreate) -> AttributeRead:
        """Replace a computed attribute's definition; the version goes up by one.

        ``data.name`` must be ``name`` (attributes are not renamed).
        """
        with self._writing() as (session, revision):
            return attributes.replace_attribute(session, revision, name, data)

    def delete_attribute(self, name: str) -> None:
        """Delete a computed attribute softly; ``Conflict`` while a live segment uses it."""
        with self._writing() as (session, revision):
            attributes.delete_attribute(session, revision, name)

    # -- change feed --------------------------------------------------------------------

    def current_revision(self) -> int:
        """The catalog's current revision (0 for a catalog never written)."""
        with self._transaction() as session:
            return store.read_revision(session)

    def changes_since(self, revision: int) -> CatalogChanges:
        """Segments and attributes changed after ``revision``, deleted ones flagged.

        Each appears once, in its latest state. Pass the returned ``revision`` to the next
        call; ``changes_since(0)`` returns everything ever defined.
        """
        if revision < 0:
            raise InvalidInput.at("revision", "must be at least 0")
        with self._transaction() as session:
            current = store.read_revision(session)
            # Bounded by ``current``: where each statement reads a fresh snapshot, a change
            # committed after ``current`` was read is left for the next call.
            segment_rows = session.scalars(
                select(SegmentRecord)
                .where(SegmentRecord.revision > revision, SegmentRecord.revision <= current)
                .order_by(SegmentRecord.revision, SegmentRecord.id)
            ).all()
            attribute_rows = session.scalars(
                select(AttributeRecord)
                .where(AttributeRecord.revision > revision, AttributeRecord.revision <= current)
                .order_by(AttributeRecord.revision, AttributeRecord.id)
            ).all()
            return CatalogChanges(
                revision=current,
                segments=[store.segment_read(r) for r in segment_rows],
                attributes=[store.attribute_read(r) for r in attribute_rows],
            )

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A transaction, with driver errors translated into catalog errors."""
        try:
            with self._sessions.begin() as session:
                yield session
        except CatalogError:
            raise
        except exc.IntegrityError as error:
            # Checks run under the revision lock, so this takes a writer bypassing it.
            raise Conflict("the change conflicts with a concurrent one; retry") from error
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            raise CatalogUnavailable(f"the catalog database is unavailable: {error}") from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise CatalogUnavailable("the catalog database connection was lost") from error
            raise

    @contextmanager
    def _writing(self) -> Iterator[tuple[Session, int]]:
        """A transaction that changes the catalog at the revision it yields."""
        with self._transaction() as session:
            yield session, store.bump_revision(session)
