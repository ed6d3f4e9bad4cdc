"""The Event Ingestion API: validate events and append them durably to the event log.

``app`` builds the FastAPI app, ``routes`` serves the two event routes, ``bodies`` and
``validation`` turn request bodies into log records, ``publisher`` groups concurrent
requests into shared durable writes, and ``schemas`` describes it all in OpenAPI.
"""

from audience_manager.api.ingestion.app import create_app

__all__ = ["create_app"]
