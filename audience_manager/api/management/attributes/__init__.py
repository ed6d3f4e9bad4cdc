"""Attributes endpoints of the management API."""

__all__: list[str] = []
