"""Prometheus metrics: what the bridge counts, in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHANGES = Counter(
    "cor_bridge_changes_total",
    "Source events received, by provider, kind and intake decision.",
    ["provider", "kind", "decision"],
)
COR_RESPONSES = Counter(
    "cor_bridge_cor_responses_total",
    "Detach calls to COR by HTTP status ('error' for network errors and timeouts).",
    ["status"],
)
JOBS_SETTLED = Counter(
    "cor_bridge_jobs_settled_total",
    "Jobs leaving a delivery attempt, by the state they moved to.",
    ["state"],
)
DELIVERY_LATENCY = Histogram(
    "cor_bridge_delivery_latency_seconds",
    "From a job being queued to COR confirming the detach.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
TOKEN_FETCHES = Counter(
    "cor_bridge_token_fetches_total", "COR OAuth2 token requests, by outcome.", ["outcome"]
)
JOBS = Gauge("cor_bridge_jobs", "Jobs in the outbox, by state.", ["state"])
OLDEST_OPEN = Gauge(
    "cor_bridge_oldest_open_job_age_seconds", "Age of the oldest pending or running job."
)
DIRECTORY_CALLS = Counter(
    "cor_bridge_directory_checks_total",
    "Users whose current groups were asked of the IdP's directory, by outcome.",
    ["provider", "outcome"],
)
HELD = Gauge(
    "cor_bridge_held_changes", "Changes held for the IdP's answer, by state.", ["provider", "state"]
)
POLLER_AGE = Gauge(
    "cor_bridge_directory_poll_age_seconds",
    "Seconds since a directory poller last finished a round without error.",
    ["poller"],
)
POLLED_EVENTS = Counter(
    "cor_bridge_directory_polled_events_total",
    "Events a directory poller read (System Log, sync), by poller.",
    ["poller"],
)
