"""The shared vocabulary: what every source reduces its input to."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.http import unsafe_segment_reason


def _plausible(value: datetime) -> datetime:
    # Year 1 at +14:00 is a valid ISO time that no database can hold in UTC: refuse it here,
    # with the field's name, instead of failing at the write.
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time out of range") from exc
    if not 1970 <= utc.year <= 9000:
        raise ValueError("time out of range (years 1970 to 9000)")
    return value


EventTime = Annotated[AwareDatetime, AfterValidator(_plausible)]
"""An aware time a database can store: what every source and filter accepts."""

# PostgreSQL cannot index a value over ~2.7 kB (one index row, all its columns together), and
# identifiers and names become indexed columns: two of them share the memberships key. Far
# longer than any IdP sends, and longer than the store's Str(300) says (nothing enforces it).
MAX_ID_BYTES = 1024


def _indexable(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"longer than {MAX_ID_BYTES} bytes")
    return _without_nul(value)


def _without_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL and stores U+FFFD instead (app/store/schema.py); doing it
    # here makes what intake compares the same as what the store gives back, on either engine.
    return value.replace("\x00", "\ufffd")


def _one_segment(value: str) -> str:
    reason = unsafe_segment_reason(value)
    if reason is not None:
        raise ValueError(reason)
    return value


Ident = Annotated[str, Field(min_length=1), AfterValidator(_indexable)]
# A COR user id travels as one URL path segment: "." and ".." would steer the detach call.
CorUserId = Annotated[str, AfterValidator(_indexable), AfterValidator(_one_segment)]
Name = Annotated[str, AfterValidator(_indexable)]
EventId = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_without_nul)]

Provider = Literal["okta", "entra"]
PROVIDERS: tuple[str, ...] = ("okta", "entra")

# The user fields each source can fill, so a mapping template can be checked at start.
SOURCE_USER_FIELDS: dict[str, frozenset[str]] = {
    "okta_hook": frozenset({"id", "login", "email"}),
    "scim": frozenset({"id", "login", "email", "externalId", "userName"}),
    "graph": frozenset({"id", "login", "email"}),
    "admin": frozenset({"id", "login", "email", "externalId", "userName"}),
}


class ChangeKind(StrEnum):
    """What happened to a membership."""

    removed = "removed"
    added = "added"
    user_deactivated = "user_deactivated"
    user_reactivated = "user_reactivated"


class UserRef(BaseModel):
    """The IdP's identifiers for a person; `id` is the IdP's stable id."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    id: Ident
    login: Name | None = None
    email: Name | None = None
    externalId: Name | None = None  # noqa: N815 - the SCIM attribute name
    userName: Name | None = None  # noqa: N815 - the SCIM attribute name

    def fields(self) -> dict[str, str]:
        """The fields this change carries, for the user_id template."""
        return {k: v for k, v in self.__dict__.items() if v}  # its fields: plain strings


class GroupRef(BaseModel):
    """An IdP group: its id and, when known, its display name."""

    model_config = ConfigDict(frozen=True)

    id: Ident
    name: Name | None = None


class MembershipChange(BaseModel):
    """One change of one person's membership, as any source reports it."""

    model_config = ConfigDict(frozen=True)

    provider: Provider
    event_id: EventId
    occurred_at: EventTime
    change: ChangeKind
    user: UserRef
    group: GroupRef | None = None
    # Operator requests only: detach exactly these workspaces, skipping the mapping.
    workspaces: tuple[Name, ...] | None = None
    cor_user_id: CorUserId | None = None
    # The user's current groups as the IdP itself reports them (Graph's transitiveMemberOf),
    # when the source asked; the still-granted rule then trusts it over what the bridge saw.
    member_of: tuple[GroupRef, ...] | None = None
    # Why the source reports it, when it is not an IdP event as such (e.g. "reconciled:
    # Okta no longer lists them"); the first line of the change's history.
    note: Name | None = None

    @model_validator(mode="after")
    def _group_when_needed(self) -> MembershipChange:
        if self.workspaces is not None:
            if not self.workspaces or not all(w.strip() for w in self.workspaces):
                raise ValueError("workspaces must list at least one non-empty workspace id")
        elif self.change in (ChangeKind.added, ChangeKind.removed) and self.group is None:
            raise ValueError(f"a '{self.change.value}' change needs a group")
        return self


class IgnoredEvent(BaseModel):
    """A source event that is recorded but causes no work (wrong type, failed outcome)."""

    model_config = ConfigDict(frozen=True)

    provider: Provider
    event_id: Annotated[str, AfterValidator(_without_nul)]
    occurred_at: datetime
    kind: str
    reason: str
    # Whom it was about, when the event says, so it shows in that user's history.
    user: UserRef | None = None
    group: GroupRef | None = None
