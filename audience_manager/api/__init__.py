"""The HTTP APIs: management (:8081) and ingestion (:8082), and what they share."""

__all__: list[str] = []
