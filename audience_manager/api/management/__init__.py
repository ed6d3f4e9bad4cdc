"""The Segment Management API: one folder per domain (segments, audiences, users,
attributes), each with thin ``routes`` and a ``service`` that decides."""

from audience_manager.api.management.app import create_app

__all__ = ["create_app"]
