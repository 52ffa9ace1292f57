"""The group -> workspace table: load, validate, look up (DESIGN.md section 4)."""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from app.changes import PROVIDERS, GroupRef, Provider, UserRef
from app.errors import ConfigError
from app.http import unsafe_segment_reason

COR_SOURCES: frozenset[str] = frozenset(
    {"JIRA", "SALESFORCE", "ADVERTMIND", "QUICKBOOKS", "ZAPIER", "OKTA", "MICROSOFT_DYNAMICS",
     "GITHUB", "MICROSOFT_TEAMS", "VBS", "SAP", "GLOBANT"}
)  # fmt: skip
# Derived from UserRef so the template language cannot drift from what changes carry.
TEMPLATE_FIELDS: frozenset[str] = frozenset(UserRef.model_fields)
DEFAULT_USER_ID = "{login}"

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def template_fields(template: str) -> frozenset[str]:
    """The fields a user_id template names; ValueError unless it is plain `{field}` text."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from exc
    names = set()
    for _text, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            allowed = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(
                f"unknown field {{{name}}} in template {template!r}; allowed: {allowed}"
            )
        if spec or conversion:
            raise ValueError(
                f"template {template!r}: write {{{name}}} with no format spec or !conv"
            )
        names.add(name)
    if not names:
        # A constant id would send every removal to one COR user: never what anyone means.
        raise ValueError(f"template {template!r} names no field, e.g. {DEFAULT_USER_ID}")
    return frozenset(names)


class ProviderConfig(BaseModel):
    """How one provider's people become COR users: metadata.source and the user id template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cor_source: str
    user_id: str

    @field_validator("cor_source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in COR_SOURCES:
            raise ValueError(
                f"unknown {value!r}; expected one of: {', '.join(sorted(COR_SOURCES))}"
            )
        return value

    @field_validator("user_id")
    @classmethod
    def _plain_template(cls, value: str) -> str:
        template_fields(value)
        return value


class _RuleSpec(BaseModel):
    """One group rule as written in the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Provider
    group_id: _Text | None = None
    group_name: _Text | None = None
    workspaces: tuple[_Text, ...]

    @field_validator("workspaces")
    @classmethod
    def _dedupe(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one workspace, e.g. [WS-ENG]")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_group_key(self) -> Self:
        if (self.group_id is None) == (self.group_name is None):
            found = "neither" if self.group_id is None else "both"
            raise ValueError(f"give exactly one of group_id or group_name (found {found})")
        return self


class GroupRule(_RuleSpec):
    """One validated rule: a provider's group (by id or by name) grants these workspaces."""

    line: int

    def label(self) -> str:
        """Human text for history and `check`, e.g. "entra group 'Finance'"."""
        if self.group_id is not None:
            return f"{self.provider} group {self.group_id}"
        return f"{self.provider} group {self.group_name!r}"

    def key(self) -> tuple[str, str, str]:
        """What makes two rules the same group: provider plus id or name."""
        if self.group_id is not None:
            return (self.provider, "id", self.group_id)
        return (self.provider, "name", self.group_name or "")


class _MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: dict[Provider, ProviderConfig] = Field(default_factory=dict)
    groups: list[_RuleSpec] = Field(default_factory=list)

    @field_validator("providers", "groups", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object, info: ValidationInfo) -> object:
        # `groups:` with every rule commented out parses as null; read it as "none".
        if value is None:
            return {} if info.field_name == "providers" else []
        return value


class Mapping:
    """A validated group -> workspace table with each provider's user id settings."""

    def __init__(
        self,
        path: str,
        providers: dict[str, ProviderConfig],
        rules: tuple[GroupRule, ...],
        *,
        default_source: str = "OKTA",
        template_lines: dict[str, int] | None = None,
    ) -> None:
        self.path = path
        self.providers = providers
        self.rules = rules
        self.default_source = default_source
        self._template_lines = template_lines or {}
        self._by_key = {rule.key(): rule for rule in rules}

    def _config(self, provider: str) -> ProviderConfig:
        default = ProviderConfig(cor_source=self.default_source, user_id=DEFAULT_USER_ID)
        return self.providers.get(provider, default)

    def rules_for(self, provider: str, group: GroupRef) -> list[GroupRule]:
        """The rules matching `group` by id or by exact (trimmed) name, in file order."""
        keys = [(provider, "id", group.id.strip())]
        if group.name is not None:
            keys.append((provider, "name", group.name.strip()))
        found = [rule for key in keys if (rule := self._by_key.get(key)) is not None]
        return sorted(found, key=lambda rule: rule.line)

    def workspaces_for(self, provider: str, group: GroupRef) -> tuple[str, ...]:
        """Every workspace `group` grants, in file order, each once."""
        rules = self.rules_for(provider, group)
        return tuple(dict.fromkeys(ws for rule in rules for ws in rule.workspaces))

    def cor_user_id(self, provider: str, user: UserRef) -> str:
        """The COR user id of `user` (the provider's user_id template, filled in); ConfigError
        when a field is missing or the result cannot be one URL path segment."""
        template = self._config(provider).user_id
        values = user.fields()
        missing = sorted(template_fields(template) - values.keys())
        if missing:
            raise ConfigError(
                f"user_id template {template!r} for {provider} needs {{{missing[0]}}}, which this "
                f"change does not carry (it has: {', '.join(sorted(values))})",
                file=self.path,
                line=self._template_lines.get(provider),
            )
        cor_user_id = template.format_map(values)
        unsafe = unsafe_segment_reason(cor_user_id)
        if unsafe is not None:
            # COR would receive the call on another route (PUT /v2/integrations/detach).
            raise ConfigError(f"{unsafe} (user_id template {template!r} for {provider})")
        return cor_user_id

    def cor_source(self, provider: str) -> str:
        """The metadata.source to send for changes from `provider`."""
        return self._config(provider).cor_source

    def check_templates(self, source_fields: dict[str, frozenset[str]]) -> None:
        """Refuse a user_id template naming a field the provider's enabled sources cannot fill."""
        for provider, available in source_fields.items():
            template = self._config(provider).user_id
            missing = template_fields(template) - available
            if missing:
                raise ConfigError(
                    f"user_id template {template!r} for {provider} uses "
                    f"{', '.join(sorted(missing))}, but the enabled {provider} sources only "
                    f"fill: {', '.join(sorted(available)) or 'nothing'}",
                    file=self.path,
                    line=self._template_lines.get(provider),
                )

    def describe(self) -> str:
        """The effective table as text, for `cor-bridge check`."""
        out = [f"mapping {self.path}: {len(self.rules)} group rule(s)", "providers:"]
        for provider in [p for p in PROVIDERS if p in self.providers]:
            config = self.providers[provider]
            note = "" if provider in self._template_lines else "  (default)"
            out.append(
                f"  {provider:<6} cor_source {config.cor_source:<19} user_id {config.user_id}{note}"
            )
        out.append("groups:")
        width = max((len(rule.label()) for rule in self.rules), default=0)
        for rule in self.rules:
            out.append(
                f"  line {rule.line:<4} {rule.label():<{width}} -> {', '.join(rule.workspaces)}"
            )
        if not self.rules:
            out.append("  (none: every change will be recorded as unmapped)")
        # The reverse view answers "why does she still have WS-ENG?" at a glance.
        granted: dict[str, list[str]] = {}
        for rule in self.rules:
            for ws in rule.workspaces:
                granted.setdefault(ws, []).append(rule.label())
        if granted:
            out.append("workspaces:")
        out.extend(f"  {ws} <- {'; '.join(labels)}" for ws, labels in granted.items())
        return "\n".join(out)


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
        place, allowed, rest = "group rule", _RuleSpec.model_fields, loc[2:]
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
