"""Settings, from the environment and a `.env` file (DESIGN.md section 3)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the bridge; field names are the environment variable names."""

    # An empty variable counts as unset, so `SECRET=` never enables a source with no secret.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    bridge_database_url: str = "sqlite:///./var/cor-bridge.db"
    bridge_mapping_file: str = "./mapping.yaml"
    bridge_mapping_poll_seconds: float = Field(default=2.0, gt=0)
    bridge_admin_token: SecretStr | None = None
    bridge_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Events in one Okta delivery, notifications in one Graph POST: more is 413, unread.
    bridge_max_events_per_delivery: int = Field(default=1000, ge=1)
    # Failed authentications per client address per minute before they are answered 429
    # (0: no limit). Requests with the right secret are never limited.
    bridge_auth_failures_per_minute: int = Field(default=30, ge=0)
    # Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: addresses or networks,
    # comma-separated. Empty: nobody's, the peer's address and scheme are the client's.
    bridge_trusted_proxies: str = ""
    # The HTTP server (`cor-bridge serve`): seconds an idle keep-alive connection is kept,
    # and connections or requests in progress at once before new ones get 503 (0: no limit).
    bridge_keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    bridge_max_connections: int = Field(default=1000, ge=0)
    # Delivery: how hard to try before a job becomes a dead letter.
    bridge_max_attempts: int = Field(default=15, ge=1)
    bridge_max_age_seconds: float = Field(default=3 * 24 * 3600, gt=0)
    bridge_retry_base_seconds: float = Field(default=2.0, ge=0)
    bridge_retry_max_seconds: float = Field(default=900.0, ge=0)
    bridge_worker_concurrency: int = Field(default=8, ge=1, le=256)
    bridge_worker_batch: int = Field(default=200, ge=1)
    bridge_poll_seconds: float = Field(default=1.0, gt=0)
    # A claim's lease: renewed every third of it while the claim is worked, so a killed
    # replica's claims are taken over within about this long (issue #14: within 30 s).
    bridge_lease_seconds: float = Field(default=15.0, gt=0)
    # A grace period before a removal is sent, so a quick re-add can cancel it.
    bridge_delivery_delay_seconds: float = Field(default=0.0, ge=0)

    cor_api_url: str = "https://integrations.projectcor.com"
    cor_token_url: str = "https://api.projectcor.com/v1/oauth/token"  # noqa: S105 - a URL
    cor_client_id: str | None = None
    cor_client_secret: SecretStr | None = None
    cor_access_token: SecretStr | None = None
    cor_source: str = "OKTA"
    cor_timeout_seconds: float = Field(default=10.0, gt=0)

    okta_hook_secret: SecretStr | None = None
    okta_hook_header: str = "Authorization"
    # Okta's Management API (read-only), asked what is true (DESIGN.md section 8).
    okta_org_url: str | None = None
    okta_api_token: SecretStr | None = None
    okta_client_id: str | None = None
    okta_private_key_file: str | None = None
    okta_dpop: bool = False  # the service app requires DPoP-bound tokens
    okta_log_poll_seconds: float = Field(default=60.0, ge=0)
    okta_sync_seconds: float = Field(default=21600.0, ge=0)
    okta_timeout_seconds: float = Field(default=10.0, gt=0)

    scim_token: SecretStr | None = None
    scim_provider: Literal["entra", "okta"] = "entra"

    graph_client_state: SecretStr | None = None
    graph_tenant_id: str | None = None
    graph_client_id: str | None = None
    graph_client_secret: SecretStr | None = None
    # Microsoft Graph: where it lives (tests point these at a stand-in) and how the bridge
    # keeps its subscriptions. Graph caps group subscriptions at 41760 minutes (29 days).
    graph_api_url: str = "https://graph.microsoft.com/v1.0"
    graph_login_url: str = "https://login.microsoftonline.com"
    graph_notification_url: str | None = None
    graph_lifecycle_url: str | None = None
    graph_subscription_minutes: int = Field(default=41760, ge=1, le=41760)
    graph_renew_before_seconds: float = Field(default=2 * 24 * 3600, gt=0)
    graph_timeout_seconds: float = Field(default=10.0, gt=0)
    graph_cache_seconds: float = Field(default=600.0, ge=0)
    # With credentials: a delta query over the mapped Entra groups this often (0: off).
    graph_delta_seconds: float = Field(default=900.0, ge=0)

    @field_validator(
        "bridge_admin_token",
        "cor_client_secret",
        "cor_access_token",
        "okta_hook_secret",
        "okta_api_token",
        "scim_token",
        "graph_client_state",
        "graph_client_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def okta_directory(self) -> bool:
        """Whether Okta itself is asked: an org URL and a token or a service app."""
        app = bool(self.okta_client_id and self.okta_private_key_file)
        return bool(self.okta_org_url) and (self.okta_api_token is not None or app)

    @field_validator("bridge_trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        found: list[str] = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                found.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
                ) from None
        return ",".join(found)

    def trusted_proxies(self) -> list[str]:
        """BRIDGE_TRUSTED_PROXIES as networks (an address is a /32 or /128 network)."""
        return self.bridge_trusted_proxies.split(",") if self.bridge_trusted_proxies else []

    def sources_on(self) -> dict[str, bool]:
        """Which sources answer; a source without its secret is off (404)."""
        return {
            "okta_hook": self.okta_hook_secret is not None,
            "scim": self.scim_token is not None,
            "graph": self.graph_client_state is not None,
            "admin": self.bridge_admin_token is not None,
        }
