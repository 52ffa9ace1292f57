"""What the mapping asks of Graph, and what works without Graph credentials.

Graph's notifications name users and groups by object id only. A mapping rule by group name,
or an entra user_id template with {login} or {email}, needs a lookup through Graph, which
needs GRAPH_TENANT_ID, GRAPH_CLIENT_ID and GRAPH_CLIENT_SECRET.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from app.errors import ConfigError
from app.graph.client import GraphCredentials
from app.mapping import DEFAULT_USER_ID, Mapping, template_fields
from app.settings import Settings

log = structlog.get_logger(__name__)

LOOKED_UP_FIELDS = frozenset({"login", "email"})


@dataclass(frozen=True)
class Needs:
    """The Graph lookups the mapping in force calls for."""

    group_names: bool
    user_fields: frozenset[str]


def credentials(settings: Settings) -> GraphCredentials | None:
    """The app registration's credentials, when all three settings are given."""
    secret = settings.graph_client_secret
    if not (settings.graph_tenant_id and settings.graph_client_id and secret is not None):
        return None
    return GraphCredentials(
        settings.graph_tenant_id, settings.graph_client_id, secret.get_secret_value()
    )


def lifecycle_url(settings: Settings) -> str | None:
    """Where Graph sends lifecycle events: GRAPH_LIFECYCLE_URL, else the notification URL's."""
    if settings.graph_lifecycle_url:
        return settings.graph_lifecycle_url
    base = settings.graph_notification_url
    return f"{base.rstrip('/')}/lifecycle" if base else None


def mapping_needs(mapping: Mapping) -> Needs:
    """Which lookups the entra side of the mapping needs."""
    config = mapping.providers.get("entra")
    template = config.user_id if config else DEFAULT_USER_ID
    return Needs(
        group_names=any(r.provider == "entra" and r.group_name is not None for r in mapping.rules),
        user_fields=template_fields(template) & LOOKED_UP_FIELDS,
    )


def check_graph(settings: Settings, mapping: Mapping) -> tuple[list[str], str | None]:
    """(warnings, fatal problem) for `cor-bridge check` and start-up.

    Without credentials, a by-name rule or a {login}/{email} template can never serve a
    Graph change. That is fatal when Graph is the only entra source; with SCIM serving entra
    too it may be meant for SCIM (which sends names), so it is a warning.
    """
    if settings.graph_client_state is None:
        return [], None
    given = [settings.graph_tenant_id, settings.graph_client_id, settings.graph_client_secret]
    if credentials(settings) is not None:
        return [], None
    warnings = []
    if any(v is not None for v in given):
        warnings.append(
            "Graph credentials are incomplete: set GRAPH_TENANT_ID, GRAPH_CLIENT_ID and "
            "GRAPH_CLIENT_SECRET together"
        )
    needs = mapping_needs(mapping)
    gaps = []
    if needs.group_names:
        lines = [str(r.line) for r in mapping.rules if r.provider == "entra" and r.group_name]
        gaps.append(
            f"entra rules by group_name ({mapping.path} line {', '.join(lines)}) never match a "
            "Graph change: Graph sends group ids (match by group_id instead)"
        )
    if needs.user_fields:
        fields = ", ".join(f"{{{f}}}" for f in sorted(needs.user_fields))
        gaps.append(
            f"the entra user_id template uses {fields}, which Graph changes carry only when the "
            "bridge can look users up (use {id}, the object id, instead)"
        )
    if not gaps:
        return warnings, None
    head = "Graph is on without GRAPH_TENANT_ID/GRAPH_CLIENT_ID/GRAPH_CLIENT_SECRET, so"
    text = f"{head} {'; and '.join(gaps)}"
    scim_serves_entra = settings.scim_token is not None and settings.scim_provider == "entra"
    if scim_serves_entra:
        return [*warnings, f"{text}. (Fine if those rules are meant for SCIM only.)"], None
    return warnings, text


def enforce_graph_config(settings: Settings, mapping: Mapping) -> None:
    """At start-up: refuse a fatal Graph gap (ConfigError), log the others."""
    warnings, fatal = check_graph(settings, mapping)
    if fatal is not None:
        raise ConfigError(fatal, file=mapping.path)
    for warning in warnings:
        log.warning("graph_config_warning", warning=warning)
