"""``python -m audience_manager``: the seed walkthrough, run through the engine."""

from __future__ import annotations

import json
import time

from audience_manager.engine import Engine, Event, SegmentDefinition
from audience_manager.rules.model import parse_rules

__all__ = ["main"]


def main() -> None:
    """Create "High Value Users", send a purchase of 1500, show the user entering."""
    engine = Engine(lambda: int(time.time() * 1000))
    rules = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
    engine.upsert_segment(
        SegmentDefinition("high-value-users", "High Value Users", parse_rules(rules))
    )
    event = Event(
        user_id="user123",
        event_type="purchase",
        timestamp=int(time.time() * 1000),
        properties={"amount": 1500, "category": "electronics"},
    )
    result = engine.apply([event])
    for change in result.changes:
        print(json.dumps(change.to_json()))
    print(json.dumps(engine.profile("user123"), indent=2))
    print(json.dumps(engine.explain("user123", "high-value-users").to_json(), indent=2))


if __name__ == "__main__":
    main()
