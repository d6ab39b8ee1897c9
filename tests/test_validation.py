"""iree_glm/validation.py: data from outside becomes a typed dataclass or one line naming the key."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from iree_glm.validation import ValidationError, bounded, from_data, to_data


@dataclass
class Inner:
    size: int = bounded(min=1, max=64)
    mode: str = bounded("a", choices=("a", "b"))


@dataclass
class Outer:
    name: str
    rate: float = bounded(min=0.0)
    inner: Inner
    items: list[int] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)
    maybe: int | None = None
    flag: bool = False


GOOD = {"name": "x", "rate": 1.5, "inner": {"size": 8}, "items": [1, 2], "table": {"a": 1}, "maybe": 3, "flag": True}


def test_good_data_round_trips():
    obj = from_data(Outer, GOOD, "f.json")
    assert obj == Outer("x", 1.5, Inner(8, "a"), [1, 2], {"a": 1.0}, 3, True)
    assert from_data(Outer, to_data(obj), "again") == obj
    assert "maybe" not in to_data(Outer("x", 1.0, Inner(1)))  # optional None fields are left out


@pytest.mark.parametrize("change, message", [
    (dict(rate=math.nan), "f.json: rate: expected a finite number, got nan"),
    (dict(rate=math.inf), "f.json: rate: expected a finite number, got inf"),
    (dict(rate=-1), "f.json: rate: -1.0 is below the minimum 0.0"),
    (dict(rate="1"), "f.json: rate: expected a number, got '1'"),
    (dict(rate=True), "f.json: rate: expected a number, got True"),
    (dict(inner={"size": "8"}), "f.json: inner.size: expected an integer, got '8'"),
    (dict(inner={"size": 8.0}), "f.json: inner.size: expected an integer, got 8.0"),
    (dict(inner={"size": 0}), "f.json: inner.size: 0 is below the minimum 1"),
    (dict(inner={"size": 65}), "f.json: inner.size: 65 is above the maximum 64"),
    (dict(inner={"size": 8, "mode": "c"}), "f.json: inner.mode: 'c' is not one of a, b"),
    (dict(inner={"size": 8, "extra": 1}), "f.json: inner.extra: unknown key"),
    (dict(inner={}), "f.json: inner.size: missing"),
    (dict(items=[1, "2"]), "f.json: items[1]: expected an integer, got '2'"),
    (dict(items="12"), "f.json: items: expected a list, got '12'"),
    (dict(table={"a": math.nan}), "f.json: table.a: expected a finite number, got nan"),
    (dict(maybe="3"), "f.json: maybe: expected an integer, got '3'"),
    (dict(flag=1), "f.json: flag: expected true or false, got 1"),
    (dict(name=None), "f.json: name: expected a string, got None"),
])
def test_bad_data_is_one_line_naming_the_key(change, message):
    with pytest.raises(ValidationError) as e:
        from_data(Outer, {**GOOD, **change}, "f.json")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_not_a_table():
    with pytest.raises(ValidationError, match=r"^f.json: value: expected a table/object, got \[1\]$"):
        from_data(Outer, [1], "f.json")
