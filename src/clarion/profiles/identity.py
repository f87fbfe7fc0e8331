"""Identity resolution over one batch, in memory: which profile each event belongs to.

`load_graph` reads (and on PostgreSQL locks) everything a batch can touch in a handful of
queries; `Graph.resolve` then decides per event, merging or refusing, without touching the
database; the caller writes the outcome once per batch.

Rules (profiles/README.md explains them):
- a profile tree holds at most one user_id: linking two trees with different user_ids is
  refused and recorded (reason `user_id_conflict`, or `shared_device` once the anonymous id
  has been seen with `SHARED_DEVICE_USER_IDS` user ids), never silent;
- a pair that was un-merged by hand is never merged again automatically;
- the profile owning the event's user_id survives a merge; otherwise the profile found first
  in the order user_id, email, phone, anonymous_id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clarion.profiles import computed as computed_traits
from clarion.profiles import traits as trait_rules
from clarion.profiles.models import ProfileMerge

USER_ID, ANONYMOUS_ID, EMAIL, PHONE = "user_id", "anonymous_id", "email", "phone"
KINDS = (USER_ID, EMAIL, PHONE, ANONYMOUS_ID)  # resolution priority
SHARED_DEVICE_USER_IDS = 5
MIN_PHONE_DIGITS = 6

Key = tuple[str, str]  # (kind, value)


def normalize_email(raw: Any) -> str | None:
    """The email as an identity: stripped and lower-cased; None when it is not one (among
    others, one holding a line break, another control character or an inner space)."""
    if not isinstance(raw, str):
        return None
    email = raw.strip().lower()
    if not email.isprintable():  # "a@b.co\r\nBcc: ..." would add headers to a message
        return None
    if " " in email:  # the other spaces are not printable
        return None
    local, at, domain = email.partition("@")
    return email if at and local and domain and len(email) <= 255 else None


def normalize_phone(raw: Any) -> str | None:
    """The phone as an identity: its digits after a leading +; None when too short, or when
    it holds a digit that is not ASCII (Arabic-Indic, fullwidth, superscript)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    digits = "".join(c for c in str(raw) if c.isdigit())
    if not digits.isascii():
        return None
    return f"+{digits}" if MIN_PHONE_DIGITS <= len(digits) <= 20 else None


def identity_keys(
    *,
    user_id: str | None,
    anonymous_id: str | None,
    traits: dict[str, Any],
    with_contacts: bool,
) -> list[Key]:
    """The identities a message carries, in resolution priority order."""
    keys: list[Key] = []
    if user_id:
        keys.append((USER_ID, user_id))
    if with_contacts:
        email, phone = normalize_email(traits.get("email")), normalize_phone(traits.get("phone"))
        if email:
            keys.append((EMAIL, email))
        if phone:
            keys.append((PHONE, phone))
    if anonymous_id:
        keys.append((ANONYMOUS_ID, anonymous_id))
    return keys


@dataclass(slots=True)
class ProfileRow:
    """A `profiles` row as a batch holds it: plain values, written back by `batch.write_graph`
    in bulk statements rather than through the ORM's unit of work."""

    id: uuid.UUID
    workspace_id: int
    canonical_id: uuid.UUID | None
    traits: dict[str, Any]
    trait_times: dict[str, Any]
    computed: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class NewIdentity:
    """An identity to insert, owned by `profile_id`."""

    key: Key
    profile_id: uuid.UUID
    event_id: int | None


@dataclass
class Graph:
    """The identity graph of the profiles one batch touches."""

    workspace_id: int
    now: datetime
    profiles: dict[uuid.UUID, ProfileRow]
    owner: dict[Key, uuid.UUID]
    user_ids: dict[uuid.UUID, set[str]]  # canonical id -> user ids of its whole tree
    blocked: set[frozenset[uuid.UUID]]  # profile pairs refused or un-merged before
    refused_with: dict[str, set[uuid.UUID]]  # anonymous id -> profiles it was refused with
    new_profiles: list[ProfileRow] = field(default_factory=list)
    new_identities: list[NewIdentity] = field(default_factory=list)
    merges: list[ProfileMerge] = field(default_factory=list)
    flattened: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    touched: set[uuid.UUID] = field(default_factory=set)  # rows to write back

    def canonical(self, profile_id: uuid.UUID) -> uuid.UUID:
        """The live profile a profile row resolves to."""
        return self.profiles[profile_id].canonical_id or profile_id

    def find(self, key: Key) -> uuid.UUID | None:
        """The canonical profile owning `key`, if any."""
        owner = self.owner.get(key)
        return None if owner is None else self.canonical(owner)

    def new_profile(self) -> uuid.UUID:
        """A fresh, empty profile."""
        profile = ProfileRow(
            id=uuid.uuid4(),
            workspace_id=self.workspace_id,
            canonical_id=None,
            traits={},
            trait_times={},
            computed=computed_traits.empty(),
            first_seen_at=None,
            last_seen_at=None,
            created_at=self.now,
            updated_at=self.now,
        )
        self.profiles[profile.id] = profile
        self.user_ids[profile.id] = set()
        self.new_profiles.append(profile)
        self.touched.add(profile.id)
        return profile.id

    def attach(self, key: Key, profile_id: uuid.UUID, event_id: int | None) -> None:
        """Give an unknown identity to a profile."""
        self.owner[key] = profile_id
        self.new_identities.append(NewIdentity(key, profile_id, event_id))
        if key[0] == USER_ID:
            self.user_ids[self.canonical(profile_id)].add(key[1])

    def resolve(self, keys: list[Key], *, event_id: int | None, reason: str) -> uuid.UUID:
        """The canonical profile of a message carrying `keys`, linking what may be linked."""
        user_key = keys[0] if keys and keys[0][0] == USER_ID else None
        target = self._target(keys, user_key, event_id)
        for key in keys:
            other = self.find(key)
            if other is None:
                self.attach(key, target, event_id)
            elif other != target:
                self.link(target, other, key=key, event_id=event_id, reason=reason)
        return target

    def _target(self, keys: list[Key], user_key: Key | None, event_id: int | None) -> uuid.UUID:
        if user_key is not None:
            known = self.find(user_key)
            if known is not None:
                return known
            # A profile found by another identity adopts the new user_id if it has none.
            for key in keys[1:]:
                found = self.find(key)
                if found is not None and not self.user_ids[found]:
                    return found
            return self.new_profile()
        for key in keys:
            found = self.find(key)
            if found is not None:
                return found
        return self.new_profile()

    def link(
        self,
        survivor: uuid.UUID,
        absorbed: uuid.UUID,
        *,
        key: Key,
        event_id: int | None,
        reason: str,
    ) -> bool:
        """Merge `absorbed` into `survivor`, or record why not; whether they merged."""
        refusal = self._refusal(survivor, absorbed, key)
        if refusal is None:
            self.merge(survivor, absorbed, key=key, event_id=event_id, reason=reason)
            return True
        pair = frozenset((survivor, absorbed))
        if pair not in self.blocked:
            self.blocked.add(pair)
            if key[0] == ANONYMOUS_ID:
                self.refused_with.setdefault(key[1], set()).add(survivor)
            self._record(survivor, absorbed, "refused", refusal, key, event_id)
        return False

    def _refusal(self, survivor: uuid.UUID, absorbed: uuid.UUID, key: Key) -> str | None:
        pair = frozenset((survivor, absorbed))
        ours, theirs = self.user_ids[survivor], self.user_ids[absorbed]
        if ours and theirs and ours != theirs:
            if key[0] == ANONYMOUS_ID:
                seen = {absorbed, survivor} | self.refused_with.get(key[1], set())
                if len(seen) >= SHARED_DEVICE_USER_IDS:
                    return "shared_device"
            return "user_id_conflict"
        if pair in self.blocked:
            return "previously_unmerged"
        return None

    def merge(
        self,
        survivor: uuid.UUID,
        absorbed: uuid.UUID,
        *,
        key: Key | None,
        event_id: int | None,
        reason: str,
    ) -> None:
        """Point `absorbed` (and its tree) at `survivor`, folding traits and computed traits."""
        keep, gone = self.profiles[survivor], self.profiles[absorbed]
        trait_rules.merge_traits(keep.traits, keep.trait_times, gone.traits, gone.trait_times)
        computed_traits.combine(keep.computed, gone.computed)
        keep.first_seen_at = _earliest(keep.first_seen_at, gone.first_seen_at)
        keep.last_seen_at = _latest(keep.last_seen_at, gone.last_seen_at)
        for profile in self.profiles.values():
            if profile.canonical_id == absorbed:
                profile.canonical_id = survivor
                self.touched.add(profile.id)
        gone.canonical_id = survivor
        gone.updated_at = keep.updated_at = self.now
        self.flattened.append((absorbed, survivor))
        self.user_ids[survivor] |= self.user_ids.pop(absorbed, set())
        self.touched |= {survivor, absorbed}
        self._record(survivor, absorbed, "merged", reason, key, event_id)

    def _record(
        self,
        survivor: uuid.UUID,
        absorbed: uuid.UUID,
        status: str,
        reason: str,
        key: Key | None,
        event_id: int | None,
    ) -> None:
        self.merges.append(
            ProfileMerge(
                workspace_id=self.workspace_id,
                survivor_id=survivor,
                absorbed_id=absorbed,
                status=status,
                reason=reason,
                identity_kind=key[0] if key else None,
                identity_value=key[1] if key else None,
                event_id=event_id,
                created_at=self.now,
            )
        )

    def resolve_alias(
        self,
        *,
        user_id: str,
        previous_id: str,
        event_id: int,
        anonymous_id: str | None = None,
    ) -> uuid.UUID:
        """`alias`: the profile known as `previous_id` is the one of `user_id`, and so is the
        message's own `anonymous_id`, linked as an identify's would be."""
        target = self._alias_target(user_id=user_id, previous_id=previous_id, event_id=event_id)
        if anonymous_id and anonymous_id != previous_id:
            key: Key = (ANONYMOUS_ID, anonymous_id)
            other = self.find(key)
            if other is None:
                self.attach(key, target, event_id)
            elif other != target:
                self.link(target, other, key=key, event_id=event_id, reason="alias")
        return target

    def _alias_target(self, *, user_id: str, previous_id: str, event_id: int) -> uuid.UUID:
        user_key: Key = (USER_ID, user_id)
        if previous_id == user_id:
            return self.resolve([user_key], event_id=event_id, reason="alias")
        previous = self.find((USER_ID, previous_id)) or self.find((ANONYMOUS_ID, previous_id))
        target = self.find(user_key)
        if target is None and previous is not None:
            if self.find((ANONYMOUS_ID, user_id)) == previous:
                return previous  # back along a link that exists already (a -> b, then b -> a)
            if not self.user_ids[previous]:
                self.attach(user_key, previous, event_id)
                return previous
        if target is None:
            target = self.resolve([user_key], event_id=event_id, reason="alias")
        if previous is None:
            self.attach((ANONYMOUS_ID, previous_id), target, event_id)
        elif previous != target:
            prev_key: Key = (USER_ID, previous_id)
            key = prev_key if prev_key in self.owner else (ANONYMOUS_ID, previous_id)
            self.link(target, previous, key=key, event_id=event_id, reason="alias")
        return target


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    values = [x for x in (a, b) if x is not None]
    return min(values) if values else None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    values = [x for x in (a, b) if x is not None]
    return max(values) if values else None


def pairs(merges: Iterable[ProfileMerge]) -> set[frozenset[uuid.UUID]]:
    """The profile pairs of stored merge records."""
    return {frozenset((m.survivor_id, m.absorbed_id)) for m in merges}
