"""The mapping table in a running bridge: load it checked, reload it on change or SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import anyio
import structlog

from app.changes import SOURCE_USER_FIELDS
from app.errors import ConfigError
from app.graph.config import enforce_graph_config
from app.mapping import Mapping, load_mapping
from app.settings import Settings

log = structlog.get_logger(__name__)


def load_checked_mapping(settings: Settings) -> Mapping:
    """Load the mapping file and check its templates against the sources that are on."""
    mapping = load_mapping(settings.bridge_mapping_file, default_source=settings.cor_source)
    mapping.check_templates(template_fields(settings))
    # At start and on every reload: rules Graph could never serve are refused the same way.
    enforce_graph_config(settings, mapping)
    return mapping


def template_fields(settings: Settings) -> dict[str, frozenset[str]]:
    """Per provider, the user fields every enabled source of it can fill."""
    on = settings.sources_on()
    feeds = {
        "okta": [s for s in ("okta_hook",) if on[s]]
        + (["scim"] if on["scim"] and settings.scim_provider == "okta" else []),
        "entra": [s for s in ("graph",) if on[s]]
        + (["scim"] if on["scim"] and settings.scim_provider == "entra" else []),
    }
    admin_fields = SOURCE_USER_FIELDS["admin"]
    return {
        provider: frozenset.intersection(admin_fields, *(SOURCE_USER_FIELDS[s] for s in sources))
        for provider, sources in feeds.items()
    }


class MappingHolder:
    """The table in force; a reload that fails keeps the last good one and says why."""

    def __init__(self, settings: Settings, mapping: Mapping) -> None:
        self.settings = settings
        self.current = mapping
        self.error: str | None = None
        self._stamp = _stamp(settings.bridge_mapping_file)

    def reload(self) -> bool:
        """Read the file again; True when a new table is in force."""
        self._stamp = _stamp(self.settings.bridge_mapping_file)
        try:
            mapping = load_checked_mapping(self.settings)
        except ConfigError as exc:
            self.error = str(exc)
            log.error(
                "mapping_reload_refused", error=self.error, kept_groups=len(self.current.rules)
            )
            return False
        self.current, self.error = mapping, None
        log.info("mapping_reloaded", file=mapping.path, groups=len(mapping.rules))
        return True

    def changed(self) -> bool:
        """Whether the file's size or modification time moved since the last read."""
        return _stamp(self.settings.bridge_mapping_file) != self._stamp

    async def watch(self, interval: float = 2.0) -> None:
        """Reload when the file changes or the process gets SIGHUP, until cancelled."""
        hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, hangup.set)
        try:
            while True:
                with anyio.move_on_after(interval):
                    await hangup.wait()
                if hangup.is_set() or self.changed():
                    hangup.clear()
                    await anyio.to_thread.run_sync(self.reload)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(Path(path))
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size
