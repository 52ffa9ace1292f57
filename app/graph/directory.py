"""Group and user lookups through Graph, cached in memory for a while.

Names and logins change rarely and a burst of notifications names the same group again and
again, so they are cached for GRAPH_CACHE_SECONDS. A user's current groups decide whether a
workspace is still granted, so they are always asked fresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from app.changes import GroupRef, UserRef
from app.graph.client import GraphClient

V = TypeVar("V")
MAX_ENTRIES = 10_000


class TtlCache(Generic[V]):
    """A small dict whose entries lapse after `ttl` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._items: dict[str, tuple[float, V]] = {}
        self._loading: dict[str, asyncio.Future[V]] = {}

    async def get(self, key: str, load: Callable[[str], Awaitable[V]]) -> V:
        """The cached value, or `load(key)` remembered for next time (one load at a time)."""
        hit = self._items.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        # A burst names the same group many times at once: they all wait for one lookup.
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key, load))
            self._loading[key] = loading
        return await asyncio.shield(loading)

    async def _load(self, key: str, load: Callable[[str], Awaitable[V]]) -> V:
        try:
            value = await load(key)
        finally:
            self._loading.pop(key, None)
        if len(self._items) >= MAX_ENTRIES:  # a crude bound: drop everything, start again
            self._items.clear()
        self._items[key] = (self._clock() + self._ttl, value)
        return value

    def forget(self, key: str) -> None:
        """Drop one entry (the object changed)."""
        self._items.pop(key, None)


class Directory:
    """Cached lookups on top of a GraphClient."""

    def __init__(
        self, client: GraphClient, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self._groups: TtlCache[GroupRef] = TtlCache(ttl, clock)
        self._users: TtlCache[UserRef] = TtlCache(ttl, clock)

    async def group(self, group_id: str) -> GroupRef:
        """The group with its display name."""
        return await self._groups.get(group_id, self.client.get_group)

    async def user(self, user_id: str) -> UserRef:
        """The user with login (userPrincipalName) and email (mail)."""
        return await self._users.get(user_id, self.client.get_user)

    async def current_groups(self, user_id: str) -> tuple[GroupRef, ...]:
        """The user's groups right now, nested ones included; never cached."""
        return await self.client.transitive_groups(user_id)

    def forget_group(self, group_id: str) -> None:
        """A notification said the group changed: look its name up afresh next time."""
        self._groups.forget(group_id)
