"""Typed configs: dataclasses as the schema, YAML files as experiments, dotted `key=value` overrides.

`load_config(Schema, yaml_path, ["optim.lr=3e-4"])` builds a nested dataclass instance; unknown
keys and ill-typed values raise `ConfigError` naming the closest valid key. Each dataclass checks
its own values in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prismlab.errors import ConfigError
from prismlab.io import atomic_write_text

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ConfigLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's plain scalars: only true/false are booleans, and `5:8` is a string. PyYAML
    (YAML 1.1) also reads yes/no/on/off as booleans, so `train.mixed_precision: no` arrived as False
    for a field whose values are strings, and `20:25` as the base-60 number 1225."""


YAML_11_ONLY = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in YAML_11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for tag, pattern, firsts in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
):
    ConfigLoader.add_implicit_resolver(tag, re.compile(pattern), list(firsts))
WORD_BOOLEANS = {"yes": True, "on": True, "no": False, "off": False}
"""Still accepted for true/false fields, where they cannot mean anything else."""


def at_least(key: str, value: int | float | None, low: int | float, example: str = "") -> None:
    """`value` (when set) must be finite and >= low."""
    if value is not None and not (math.isfinite(value) and value >= low):
        raise ValueError(f"{key}={value} must be >= {low}{example}")


def within(key: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = True) -> None:
    """`value` in [low, high) (or with the ends given open/closed)."""
    ok = (
        math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        raise ValueError(f"{key}={value} must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read `path` (YAML, may be None), apply `key=value` overrides, validate against `schema`."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    for old, new in getattr(schema, "RENAMED_KEYS", {}).items():
        rename_key(raw, old, new)
    return from_dict(schema, raw)


def rename_key(tree: dict[str, Any], old: str, new: str) -> None:
    """A key that has moved (`schema.RENAMED_KEYS`): its value goes to the new key, so that run dirs
    and YAML files written before the move still read, with a line saying the new name."""
    *parents, leaf = old.split(".")
    node = tree
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    if leaf not in node:
        return
    value = node.pop(leaf)
    if value is not None:
        logger.warning("config key %s is now %s; read as %s=%s", old, new, new, value)
        set_dotted(tree, new, value)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file (see configs/)")
    try:
        data = yaml.load(path.read_text(), Loader=ConfigLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`optim.lr=3e-4` -> ("optim.lr", 0.0003); the value is parsed as YAML (numbers, lists, null)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
    try:
        value = yaml.load(text, Loader=ConfigLoader) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(schema: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build `schema` from a nested dict, rejecting unknown keys with the closest valid name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(unknown_key_message(prefix + str(key), [prefix + name for name in fields]))
        kwargs[key] = coerce(hints[key], value, prefix + key)
    try:
        return schema(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)  # messages that name their key need no prefix
        raise ConfigError(
            message if prefix and message.startswith(prefix) else f"{prefix.rstrip('.') or 'config'}: {message}"
        ) from None


def unknown_key_message(key: str, valid: list[str]) -> str:
    close = closest_name(key.rsplit(".", 1)[-1], {name.rsplit(".", 1)[-1]: name for name in valid})
    hint = f"did you mean {close!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown config key {key!r}; {hint}"


def closest_name(leaf: str, candidates: dict[str, str]) -> str | None:
    """The candidate a user most likely meant: an abbreviation (learning_rate -> lr) or a near spelling."""
    initials = "".join(part[:1] for part in leaf.split("_"))
    for short, full in candidates.items():
        if "_" in leaf and short == initials:
            return full
    close = difflib.get_close_matches(leaf, list(candidates), n=1, cutoff=0.5)
    return candidates[close[0]] if close else None


def coerce(hint: Any, value: Any, key: str) -> Any:
    """Check/convert one value against its annotation (dataclass, Literal, Optional, list, scalars)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return coerce(non_none[0], value, key)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(str(a).lower() if isinstance(a, bool) else repr(a) for a in args)  # YAML's words
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {choices}")
        return value
    if origin is dict and args and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping, e.g. {key}={{name: {{...}}}}")
        return {str(k): coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list, e.g. {key}=[1,2]")
        item_hint = args[0] if args else Any
        items = [coerce(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, str) and value.lower() in WORD_BOOLEANS:
            return WORD_BOOLEANS[value.lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a string")
        return str(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))
