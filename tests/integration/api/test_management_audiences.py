"""Audience algebra and previews over real HTTP, against Python set algebra (the app, the
processor and the backends of ``test_management_api``)."""

from __future__ import annotations

import random
from typing import Any

from test_management_api import HIGH_VALUE, Platform, assert_error, event
from test_management_api import platform as platform  # the fixture, shared


def test_preview_sizes_an_unsaved_rule(platform: Platform) -> None:
    platform.send(*(event(f"u{i}", amount=400 * i) for i in range(6)))
    platform.settle()
    response = platform.client.post(
        "/api/segments/preview", json={"rules": HIGH_VALUE, "sample": 2}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["size"] == 3
    assert len(preview["sample"]) == 2
    assert set(preview["sample"]) <= {"u3", "u4", "u5"}
    bad = {"conditions": [{"field": "totalSpent", "operator": "between", "value": 1}]}
    invalid = platform.client.post("/api/segments/preview", json={"rules": bad})
    assert_error(invalid, 422, "rules.conditions[0].value")
    ref = {"conditions": [{"segment": "Nope", "operator": "in"}]}
    invalid = platform.client.post("/api/segments/preview", json={"rules": ref})
    assert_error(invalid, 422, "rules.conditions[0].segment")


def _expected(node: Any, sets: dict[str, set[str]], universe: set[str]) -> set[str]:
    if isinstance(node, str):
        return sets[node]
    if "not" in node:
        return universe - _expected(node["not"], sets, universe)
    parts = [_expected(operand, sets, universe) for operand in next(iter(node.values()))]
    return set.intersection(*parts) if "and" in node else set.union(*parts)


def test_audience_counts_and_overlaps_match_set_algebra(platform: Platform) -> None:
    rng = random.Random(7)
    traits: dict[str, dict[str, Any]] = {
        f"u{i}": {"plan": rng.choice(["pro", "free"]), "age": rng.randrange(18, 60)}
        for i in range(80)
    }
    rules = {
        "Pro": {"conditions": [{"field": "plan", "operator": "eq", "value": "pro"}]},
        "Senior": {"conditions": [{"field": "age", "operator": "gte", "value": 40}]},
        "Spender": HIGH_VALUE,
    }
    ids = {name: platform.create(name, rule)["id"] for name, rule in rules.items()}
    spent = {user: rng.choice([0, 2000]) for user in traits}
    platform.send(*(event(u, "identify", traits=t) for u, t in traits.items()))
    platform.send(*(event(u, amount=a) for u, a in spent.items() if a))
    platform.settle()

    def check() -> None:
        sets = {
            "Pro": {u for u, t in traits.items() if t["plan"] == "pro"},
            "Senior": {u for u, t in traits.items() if t["age"] >= 40},
            "Spender": {u for u, a in spent.items() if a > 1000},
        }
        expressions = [
            {"and": ["Pro", "Senior"]},
            {"or": ["Pro", {"not": "Spender"}]},
            {"not": {"and": ["Pro", "Senior", "Spender"]}},
            {"and": ["Senior", {"not": {"or": ["Pro", "Spender"]}}]},
        ]
        for expression in expressions:
            assert platform.count(expression) == len(_expected(expression, sets, set(traits)))
        by_id = {"and": [ids["Pro"], {"segment": ids["Senior"]}]}
        assert platform.count({"expression": by_id}) == len(sets["Pro"] & sets["Senior"])
        names = list(rules)
        overlap = platform.client.get(
            "/api/segments/overlap", params={"ids": ",".join(names)}
        ).json()
        assert overlap["segments"] == [ids[n] for n in names]
        assert overlap["matrix"] == [[len(sets[a] & sets[b]) for b in names] for a in names]

    check()
    for user in rng.sample(sorted(traits), 20):  # membership moves; counts follow
        traits[user] = {"plan": "pro" if traits[user]["plan"] == "free" else "free", "age": 45}
        platform.send(event(user, "identify", traits=traits[user]))
    platform.settle()
    check()
    unknown = platform.client.post("/api/audiences/count", json={"and": ["Pro", {"not": "X"}]})
    assert_error(unknown, 422, "expression.and[1].not")
    assert_error(platform.client.post("/api/audiences/count", json={"xor": []}), 422)
