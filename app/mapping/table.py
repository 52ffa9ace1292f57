"""The group -> workspace table and its rules: validate, look up (DESIGN.md section 4)."""

from __future__ import annotations

import functools
import string
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    field_validator,
    model_validator,
)

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


@functools.lru_cache(maxsize=256)
def template_fields(template: str) -> frozenset[str]:
    """The fields a user_id template names; ValueError unless it is plain `{field}` text.
    Cached: intake asks it of every change (a parse each was ~5% of intake's CPU)."""
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


class RuleSpec(BaseModel):
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


class GroupRule(RuleSpec):
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
        found = self.providers.get(provider)
        if found is not None:  # the default is built (and validated) only when needed
            return found
        return ProviderConfig(cor_source=self.default_source, user_id=DEFAULT_USER_ID)

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
