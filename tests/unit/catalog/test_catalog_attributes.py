"""Computed attributes through the catalog service."""

from typing import Any

import pytest

from audience_manager.catalog import (
    AttributeCreate,
    CatalogService,
    Conflict,
    InvalidInput,
    NotFound,
    SegmentCreate,
)
from audience_manager.rules.attributes import RESERVED_NAMES, ComputedAttribute

BODY: dict[str, Any] = {
    "name": "bigOrders",
    "eventType": "order",
    "aggregate": "sum",
    "property": "total",
    "where": [{"field": "currency", "operator": "eq", "value": "EUR"}],
    "within": "30d",
    "description": "Euro order totals over 30 days",
}


def attribute(**changes: Any) -> AttributeCreate:
    return AttributeCreate.model_validate({**BODY, **changes})


def paths(error: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [issue.path for issue in error.value.issues]


def test_create_and_read_back(catalog: CatalogService) -> None:
    created = catalog.create_attribute(attribute())
    body = created.model_dump(mode="json")
    assert body == {
        **BODY,
        "id": created.id,
        "version": 1,
        "createdAt": body["createdAt"],
        "updatedAt": body["createdAt"],
        "deleted": False,
    }
    assert created.id.startswith("attr_")
    assert catalog.get_attribute("bigOrders") == created
    assert catalog.list_attributes().items == [created]
    assert created.to_attribute() == ComputedAttribute.model_validate(BODY)


def test_reserved_and_invalid_definitions_are_rejected(catalog: CatalogService) -> None:
    for name in sorted(RESERVED_NAMES):
        with pytest.raises(InvalidInput) as error:
            catalog.create_attribute(attribute(name=name))
        assert paths(error) == ["name"]
    with pytest.raises(InvalidInput) as error:
        catalog.create_attribute(attribute(eventType="bad type!", within="400d"))
    assert paths(error) == ["eventType", "within"]
    with pytest.raises(InvalidInput) as error:
        catalog.create_attribute(attribute(aggregate="count"))
    assert paths(error) == ["property"]
    with pytest.raises(InvalidInput) as error:
        catalog.create_attribute(attribute(where=[{"field": "x", "operator": "nope"}]))
    assert paths(error) == ["where[0].operator"]
    assert catalog.current_revision() == 0


def test_names_are_unique_among_live_attributes(catalog: CatalogService) -> None:
    first = catalog.create_attribute(attribute())
    with pytest.raises(Conflict, match="'bigOrders' already exists"):
        catalog.create_attribute(attribute())
    catalog.delete_attribute("bigOrders")
    with pytest.raises(NotFound):
        catalog.get_attribute("bigOrders")
    assert catalog.list_attributes().items == []
    again = catalog.create_attribute(attribute(aggregate="max"))
    assert (again.id != first.id, again.aggregate) == (True, "max")


def test_replace_bumps_the_version(catalog: CatalogService) -> None:
    created = catalog.create_attribute(attribute())
    replaced = catalog.replace_attribute("bigOrders", attribute(within=None, where=[]))
    assert (replaced.id, replaced.version, replaced.within, replaced.where) == (
        created.id,
        2,
        None,
        [],
    )
    assert replaced.created_at == created.created_at
    with pytest.raises(InvalidInput) as error:
        catalog.replace_attribute("bigOrders", attribute(name="renamed"))
    assert paths(error) == ["name"]
    with pytest.raises(NotFound):
        catalog.replace_attribute("missing", attribute(name="missing"))


def test_attributes_used_by_segments_stay(catalog: CatalogService) -> None:
    catalog.create_attribute(attribute())
    rules = {"conditions": [{"not": {"field": "bigOrders", "operator": "gt", "value": 100}}]}
    segment = catalog.create_segment(SegmentCreate(name="Big", rules=rules))
    with pytest.raises(Conflict, match="used by segment\\(s\\) 'Big'"):
        catalog.delete_attribute("bigOrders")
    catalog.delete_segment(segment.id)
    catalog.delete_attribute("bigOrders")


def test_builtins_are_not_stored(catalog: CatalogService) -> None:
    with pytest.raises(NotFound):
        catalog.get_attribute("totalSpent")
    with pytest.raises(NotFound):
        catalog.delete_attribute("totalSpent")
