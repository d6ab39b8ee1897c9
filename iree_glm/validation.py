"""One place that turns data from outside (JSON, TOML, request bodies) into typed dataclasses.

`from_data(cls, data, where)` checks every field against its annotation (int, float, str, bool,
`X | None`, `list[X]`, `tuple[X, ...]`, `dict[str, X]`, `Literal[...]`, nested dataclasses),
refuses NaN and infinity, booleans where numbers are expected, unknown keys and missing
required ones, and the bounds a field declares in its metadata (`bounded(min=..., max=...)`,
`choices=(...)`). Every problem is one `UserError` line naming the source and the key path:
`manifest.json: options.max_context: expected an integer, got '12'`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union

from iree_glm.errors import UserError

T = TypeVar("T")


class ValidationError(UserError):
    """Data from outside that does not fit its declared shape (one line: control characters of
    keys and values from the data are escaped)."""

    def __init__(self, message: str):
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


def bounded(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, **kw) -> Any:
    """A dataclass field with bounds (inclusive) or allowed values, checked by `from_data`."""
    meta = {k: v for k, v in (("min", min), ("max", max), ("choices", choices)) if v is not None}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(tp: Any, value: Any, where: str, path: str) -> Any:
    def fail(problem: str) -> ValidationError:
        return ValidationError(f"{where}: {path or 'value'}: {problem}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(option, value, where, path)
            except ValidationError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else fail(f"unexpected value {_show(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise fail(f"{_show(value)} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(f"expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise fail(f"expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail(f"expected a string, got {_show(value)}")
        return value
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail(f"expected a list, got {_show(value)}")
        item = args[0] if args else Any
        items = [_check(item, v, where, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_t, val_t = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise fail(f"expected a table/object, got {_show(value)}")
        return {_check(key_t, k, where, path): _check(val_t, v, where, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_data(tp, value, where, path)
    raise TypeError(f"validation: unsupported annotation {tp!r} at {path}")


def from_data(cls: type[T], data: Any, where: str, path: str = "", *, ignore_unknown: bool = False) -> T:
    """An instance of dataclass `cls` from `data` (a dict), every field checked; see the module doc.
    `ignore_unknown`: keys `cls` does not declare are skipped (a Hugging Face config.json holds
    many we do not read), not refused."""
    if not isinstance(data, dict):
        raise ValidationError(f"{where}: {path or 'value'}: expected a table/object, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if ignore_unknown:
        data = {k: v for k, v in data.items() if k in fields}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValidationError(f"{where}: {path + '.' if path else ''}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValidationError(f"{where}: {key}: missing")
            continue
        value = _check(hints[name], data[name], where, key)
        meta = f.metadata
        if value is not None and "choices" in meta and value not in meta["choices"]:
            raise ValidationError(f"{where}: {key}: {_show(value)} is not one of {', '.join(map(str, meta['choices']))}")
        if value is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if "min" in meta and value < meta["min"]:
                raise ValidationError(f"{where}: {key}: {value} is below the minimum {meta['min']}")
            if "max" in meta and value > meta["max"]:
                raise ValidationError(f"{where}: {key}: {value} is above the maximum {meta['max']}")
        values[name] = value
    return cls(**values)


def to_data(obj: Any) -> Any:
    """A dataclass (nested, in lists and dicts) as plain JSON data; optional fields left at their
    default None are left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (getattr(obj, f.name) is None and f.default is None)}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def option(tp: type, name: str, *, min: float | None = None, max: float | None = None) -> Any:
    """An argparse `type=` for a number option: parses `tp` (int or float) and checks it as
    `from_data` would (NaN, infinity, bounds). A bad value raises `ValidationError`, which
    argparse lets through, so the command line prints one `error:` line (not argparse's usage)."""

    def parse(text: str) -> Any:
        try:
            value = tp(text)
        except ValueError:
            kind = "an integer" if tp is int else "a number"
            raise ValidationError(f"{name}: expected {kind}, got {_show(text)}") from None
        if tp is float and not math.isfinite(value):
            raise ValidationError(f"{name}: expected a finite number, got {text}")
        if min is not None and value < min:
            raise ValidationError(f"{name}: {value} is below the minimum {min}")
        if max is not None and value > max:
            raise ValidationError(f"{name}: {value} is above the maximum {max}")
        return value

    parse.__name__ = tp.__name__  # argparse names the type in its own messages
    return parse
