"""The checking engine of `params.yaml`: a value against its field's type annotation, a section into its dataclass.

Every error names the key, the value and what is allowed (`fail`). No TensorFlow.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from pipeline.core.errors import ConfigError

SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params.yaml: {key} = {value!r} is not valid; expected {allowed}.")


def describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(choice) for choice in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else describe(arg) for arg in typing.get_args(annotation))
    if origin is list:
        return f"a list of {describe(typing.get_args(annotation)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        annotation, str(annotation)
    )


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks `value` against a field's type annotation; returns it (ints widened to float)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value in typing.get_args(annotation) and type(value) is not bool:
            return value
        fail(key, value, describe(annotation))
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is type(None) and value is None:
                return None
            if arg is not type(None):
                try:
                    return coerce(key, value, arg)
                except ConfigError:
                    continue
        fail(key, value, describe(annotation))
    if origin is list:
        if not isinstance(value, list):
            fail(key, value, describe(annotation))
        (item_type,) = typing.get_args(annotation)
        return [coerce(f"{key}[{index}]", item, item_type) for index, item in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads 1e-05 as a string; `dvc exp run -S x=0.00001` writes exactly that.
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is dict:
        if isinstance(value, Mapping):
            return dict(value)
    else:  # pragma: no cover - a programming error in this module, not a user error
        raise TypeError(f"unsupported annotation {annotation!r} for {key}")
    fail(key, value, describe(annotation))


def build_section(section: str, cls: type, values: Any) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        fail(section, values, "a mapping of settings")
    hints = typing.get_type_hints(cls)
    allowed = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(
            f"params.yaml: unknown key {section}.{unknown[0]}; the {section} section accepts: {', '.join(allowed)}."
        )
    kwargs = {name: coerce(f"{section}.{name}", value, hints[name]) for name, value in values.items()}
    instance = cls(**kwargs)
    if hasattr(instance, "_validate"):
        instance._validate(section)
    return instance
