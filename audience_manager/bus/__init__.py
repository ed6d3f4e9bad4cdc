"""The event-log port and its backends.

``base`` defines the port (``EventBus``, ``Consumer``, ``Record`` and the exceptions);
``embedded`` keeps the log in local files; ``kafka`` uses a Kafka cluster. Backends are
imported from their modules so that using one never requires another's driver.
"""

from audience_manager.bus.base import (
    BusError,
    BusUnavailable,
    Consumer,
    EventBus,
    OffsetOutOfRange,
    Record,
)
from audience_manager.bus.partitioning import partition_for_key

__all__ = [
    "BusError",
    "BusUnavailable",
    "Consumer",
    "EventBus",
    "OffsetOutOfRange",
    "Record",
    "partition_for_key",
]
