"""Reading a mapping file: YAML with line numbers, so every mistake names file:line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from app.changes import PROVIDERS, Provider
from app.errors import ConfigError
from app.mapping.table import (
    COR_SOURCES,
    DEFAULT_USER_ID,
    GroupRule,
    Mapping,
    ProviderConfig,
    RuleSpec,
)


class _MappingFile(BaseModel):
    """The file's top level, as written."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[Provider, ProviderConfig] = Field(default_factory=dict)
    groups: list[RuleSpec] = Field(default_factory=list)

    @field_validator("providers", "groups", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object, info: ValidationInfo) -> object:
        # `groups:` with every rule commented out parses as null; read it as "none".
        if value is None:
            return {} if info.field_name == "providers" else []
        return value


def load_mapping(path: str | os.PathLike[str], *, default_source: str = "OKTA") -> Mapping:
    """Read and validate a mapping file; ConfigError(reason, file, line) for any problem."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError("mapping file not found (see BRIDGE_MAPPING_FILE)", file=name) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read the mapping file: {exc.strerror or exc}", file=name
        ) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError("the file is not UTF-8 text", file=name, line=line) from exc
    return parse_mapping(text, path=name, default_source=default_source)


def parse_mapping(text: str, *, path: str = "<string>", default_source: str = "OKTA") -> Mapping:
    """Validate mapping YAML given as text; `path` only names it in errors."""
    if default_source not in COR_SOURCES:
        expected = ", ".join(sorted(COR_SOURCES))
        raise ConfigError(
            f"COR_SOURCE {default_source!r} is not a COR source; expected: {expected}"
        )
    root, data = _compose(text, path)
    if not isinstance(data, dict):
        reason = "the top level must be a mapping with 'providers:' and 'groups:'"
        raise ConfigError(reason, file=path, line=_line(root))
    try:
        parsed = _MappingFile.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, root, path) from exc
    rules = tuple(
        GroupRule.model_validate(
            {**spec.model_dump(), "line": _line(_node_at(root, ("groups", i)))}
        )
        for i, spec in enumerate(parsed.groups)
    )
    first: dict[tuple[str, str, str], GroupRule] = {}
    for rule in rules:
        if (earlier := first.setdefault(rule.key(), rule)) is not rule:
            reason = (
                f"{rule.label()} is listed twice (first at line {earlier.line}); "
                "put all its workspaces in one rule"
            )
            raise ConfigError(reason, file=path, line=rule.line)
    providers: dict[str, ProviderConfig] = {p: c for p, c in parsed.providers.items()}
    lines = {p: _line(_node_at(root, ("providers", p, "user_id"))) for p in providers}
    for rule in rules:  # a provider with rules but no entry gets the defaults
        providers.setdefault(
            rule.provider, ProviderConfig(cor_source=default_source, user_id=DEFAULT_USER_ID)
        )
    return Mapping(path, providers, rules, default_source=default_source, template_lines=lines)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps plain scalars as written: ids like 0123 or 1e5 stay text."""


# Only null and merge keep their YAML meaning; as ints, `0123` would become 83 and `1e5` 100000.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.endswith((":null", ":merge"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _compose(text: str, path: str) -> tuple[yaml.Node, Any]:
    """The YAML node tree (for line numbers) and the data it builds."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError("the file is empty; expected 'providers:' and 'groups:'", file=path)
        _refuse_duplicate_keys(root, path, set())
        return root, loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"invalid YAML: {reason}", file=path, line=_mark_line(mark)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=path) from exc
    finally:
        loader.dispose()


def _refuse_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Refuse a key given twice in one mapping: YAML would silently keep only the last one."""
    if id(node) in seen:  # aliases may share or even nest nodes
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in first:
                    reason = f"key {key.value!r} is given twice (first at line {first[key.value]})"
                    raise ConfigError(reason, file=path, line=_line(key))
                first[key.value] = _line(key)
            _refuse_duplicate_keys(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path, seen)


def _mark_line(mark: yaml.Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


def _line(node: yaml.Node) -> int:
    return _mark_line(node.start_mark) or 1


def _node_at(root: yaml.Node, loc: Sequence[int | str]) -> yaml.Node:
    """The node a pydantic error `loc` points at (the key, for a key's errors), or its parent."""
    node, key = root, root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if pair is None:
                break
            key, node = pair
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = key = node.value[part]
        else:
            break
    # A key's own line reads best: `okta:` rather than the first line of its block below.
    return key


def _explain(exc: ValidationError, root: yaml.Node, path: str) -> ConfigError:
    """One ConfigError for all of pydantic's complaints: the first leads, the rest follow."""
    # A missing key is often the echo of a misspelt one, so the misspelling leads.
    errors = sorted(
        exc.errors(), key=lambda e: (e["type"] == "missing", _line(_node_at(root, e["loc"])))
    )
    (line, reason), *rest = [(_line(_node_at(root, e["loc"])), _reason(e)) for e in errors]
    reason += "".join(f"\n  also line {n}: {r}" for n, r in rest)
    return ConfigError(reason, file=path, line=line)


def _reason(err: ErrorDetails) -> str:
    """A pydantic error in the file's own words."""
    loc, kind = err["loc"], err["type"]
    if len(loc) >= 2 and loc[0] == "providers":
        place, allowed, rest = f"provider {loc[1]!r}", ProviderConfig.model_fields, loc[2:]
    elif len(loc) >= 2 and loc[0] == "groups":
        place, allowed, rest = "group rule", RuleSpec.model_fields, loc[2:]
    else:
        place, allowed, rest = "the top level", _MappingFile.model_fields, loc
    field = str(rest[0]) if rest else ""
    if kind == "literal_error" or rest == ("[key]",):
        return f"unknown provider {err['input']!r}; expected {' or '.join(PROVIDERS)}"
    if kind == "extra_forbidden":
        hint = "".join(f" (did you mean {m!r}?)" for m in get_close_matches(field, allowed, 1))
        return f"unknown key {field!r} in {place}{hint}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return f"{place}: missing key {field!r}"
    messages = {
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "list_type": "expected a list",
        "tuple_type": "expected a list",
        "string_type": "expected text",
        "string_too_short": "must not be blank",
    }
    message = messages.get(kind, err["msg"].removeprefix("Value error, "))
    return f"{field}: {message}" if field else f"{place}: {message}"
