"""Errors of the catalog, under one root.

::

    CatalogError
    ├── NotFound            no live segment or attribute has that id or name   (404)
    ├── Conflict            the request clashes with the catalog's state       (409)
    ├── InvalidInput        a field is invalid; ``issues`` locate each problem  (422)
    └── CatalogUnavailable  the database cannot be reached or is busy          (503)
"""

from __future__ import annotations

from collections.abc import Iterable

from audience_manager.rules.errors import RuleIssue

__all__ = ["CatalogError", "CatalogUnavailable", "Conflict", "InvalidInput", "NotFound"]


class CatalogError(Exception):
    """Root of every error the catalog raises."""


class NotFound(CatalogError):
    """No live segment or attribute matches the id or name asked for."""


class Conflict(CatalogError):
    """The change clashes with the catalog: a taken name, a live reference, a stale version."""


class InvalidInput(CatalogError):
    """The request is invalid; ``issues`` name the path of every offending field."""

    def __init__(self, issues: Iterable[RuleIssue]) -> None:
        self.issues: list[RuleIssue] = list(issues)
        super().__init__("; ".join(f"{issue.path}: {issue.message}" for issue in self.issues))

    @classmethod
    def at(cls, path: str, message: str) -> InvalidInput:
        """An error with a single issue at ``path``."""
        return cls([RuleIssue(path, message)])

    @property
    def details(self) -> list[dict[str, str]]:
        """The issues as JSON objects: ``[{"path": ..., "message": ...}]``."""
        return [{"path": issue.path, "message": issue.message} for issue in self.issues]


class CatalogUnavailable(CatalogError):
    """The catalog database cannot be reached, or stayed locked too long; retry later."""
