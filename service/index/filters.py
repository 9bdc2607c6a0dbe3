"""Metadata filters -> one SQL condition over the items table, with every value bound as a parameter.

    {"kind": "dog"}                      equality (a list value means "equals this list": use "in")
    {"year": {"gte": 2000, "lt": 2010}}  numeric ranges: gt, gte, lt, lte
    {"kind": {"in": ["dog", "cat"]}}     membership; also "eq", "ne", "nin"
    {"missing": null}                    the key is absent or null

"ne" and "nin" hold for items that lack the key (a missing value is not 3), as in MongoDB; SQL's
`!=` and `NOT IN` would silently drop them.

Conditions on several keys all have to hold. The search restricts its candidates to the ids that
match *before* taking the top k, so a filter never silently shortens a result list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from service.index.errors import InvalidFilterError

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_MAX_VALUES = 10_000


def _path(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidFilterError(
            f"filter key {key!r}: use letters, digits, '_', '-' and '.' (a dot goes one level down)")
    return "$." + ".".join(f'"{part}"' for part in key.split("."))


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)  # JSON true/false come back from json_extract as 1/0
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")  # SQLite binds UTF-8; a lone surrogate (JSON "\ud800") has none
        except UnicodeEncodeError:
            raise InvalidFilterError(f"filter on {key!r}: the value is not valid Unicode (a lone surrogate)") from None
    if isinstance(value, int):
        return _integer(key, value)
    if value is None or isinstance(value, float | str):
        return value
    raise InvalidFilterError(
        f"filter on {key!r}: compare with a string, number, boolean or null, not {json.dumps(value)[:60]}")


def _number(key: str, op: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFilterError(f"filter on {key!r}: {op!r} needs a number, got {value!r}")
    return _integer(key, value) if isinstance(value, int) else value


def _integer(key: str, value: int) -> int:
    if not -(2**63) <= value < 2**63:  # SQLite's integers are 64-bit; a larger one cannot even be bound
        raise InvalidFilterError(f"filter on {key!r}: {value} is outside the 64-bit integer range")
    return value


def to_sql(filter_: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """`(condition, parameters)` for `WHERE condition`; an empty filter is `1`."""
    if not filter_:
        return "1", []
    if not isinstance(filter_, Mapping):
        raise InvalidFilterError("a filter is an object: metadata key -> value or {operator: value}")
    clauses, params = [], []
    for key, condition in filter_.items():
        field = "json_extract(metadata, ?)"
        path = _path(key)
        if not isinstance(condition, Mapping):
            condition = {"eq": condition}
        if not condition:
            raise InvalidFilterError(f"filter on {key!r} has no operator")
        for op, value in condition.items():
            if op in ("eq", "ne"):
                value = _scalar(key, value)
                if value is None:
                    clauses.append(f"{field} IS {'NOT ' if op == 'ne' else ''}NULL")
                    params.append(path)
                else:  # IS NOT: true for a missing key, where != is NULL
                    clauses.append(f"{field} {'=' if op == 'eq' else 'IS NOT'} ?")
                    params += [path, value]
            elif op in _COMPARE:
                clauses.append(f"{field} {_COMPARE[op]} ?")
                params += [path, _number(key, op, value)]
            elif op in ("in", "nin"):
                if not isinstance(value, list) or not value or len(value) > _MAX_VALUES:
                    raise InvalidFilterError(f"filter on {key!r}: {op!r} needs a list of 1 to {_MAX_VALUES} values")
                values = [_scalar(key, v) for v in value]
                present = [v for v in values if v is not None]
                listed_null = len(present) < len(values)  # null in the list stands for a missing key
                marks = ", ".join("?" * len(present))
                listed = [(f"{field} {'NOT ' if op == 'nin' else ''}IN ({marks})", [path, *present])] if present else []
                if op == "in":
                    parts = listed + ([(f"{field} IS NULL", [path])] if listed_null else [])
                else:  # a missing key is outside the list unless null is in it
                    parts = [(f"{field} IS {'NOT ' if listed_null else ''}NULL", [path]), *listed]
                clauses.append((" AND " if op == "nin" and listed_null else " OR ").join(c for c, _ in parts))
                for _, bound in parts:
                    params += bound
            else:
                valid = ", ".join(["eq", "ne", *_COMPARE, "in", "nin"])
                raise InvalidFilterError(f"filter on {key!r}: unknown operator {op!r}; valid: {valid}")
    return " AND ".join(f"({c})" for c in clauses), params
