"""The catalog: segments and computed attributes in SQL (SQLite embedded, or PostgreSQL).

:class:`CatalogService` is the only way in. Run :func:`migrate` before using a database,
and follow :meth:`CatalogService.changes_since` to learn what changed, when a
:class:`CatalogWatcher` says something may have.
"""

from audience_manager.catalog.database import create_catalog_engine, sqlite_url
from audience_manager.catalog.errors import (
    CatalogError,
    CatalogUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
)
from audience_manager.catalog.migrate import migrate
from audience_manager.catalog.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from audience_manager.catalog.schemas import (
    AttributeCreate,
    AttributeRead,
    CatalogChanges,
    Page,
    SegmentCreate,
    SegmentRead,
    SegmentStatus,
    SegmentType,
)
from audience_manager.catalog.service import CatalogService
from audience_manager.catalog.watch import CatalogWatcher

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AttributeCreate",
    "AttributeRead",
    "CatalogChanges",
    "CatalogError",
    "CatalogService",
    "CatalogUnavailable",
    "CatalogWatcher",
    "Conflict",
    "InvalidInput",
    "NotFound",
    "Page",
    "SegmentCreate",
    "SegmentRead",
    "SegmentStatus",
    "SegmentType",
    "create_catalog_engine",
    "migrate",
    "sqlite_url",
]
