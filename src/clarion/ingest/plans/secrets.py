"""Enrichment header values (API tokens, as a rule) are stored sealed, as channel
credentials are: encrypted with a key derived from Clarion's secret key (`core/crypto.py`,
purpose "enrichment headers"), so the database, its backups and the plans cached in Redis
never hold them in the clear. Names stay readable; the API shows values as `<hidden>`.

A stored value is `sealed:` and the sealed document `{"value": ...}`. Values saved before
sealing existed are read as they are, and sealed when a process starts; so are values
sealed under a previous secret key (`CLARION_PREVIOUS_SECRET_KEYS`), sealed again under the
current one (`plans_to_seal`, then `seal_plans` only when one is found).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.crypto import UnreadableSecret, Vault
from clarion.core.settings import SecretKeys
from clarion.ingest.plans.models import TrackingPlan

SEALED = "sealed:"


class HeaderVault:
    """Seals and opens enrichment header values under the deployment's secret key."""

    def __init__(self, keys: SecretKeys | str) -> None:
        keys = SecretKeys(keys) if isinstance(keys, str) else keys
        self._vault = Vault(keys, purpose="enrichment headers")
        self._rotating = bool(keys.previous)

    def seal(self, value: str) -> str:
        """`value` as it is stored."""
        return SEALED + self._vault.seal({"value": value})

    def open(self, stored: str) -> str:
        """The value `stored` holds; UnreadableSecret when this secret key cannot read it."""
        if not is_sealed(stored):
            return stored  # saved before values were sealed: sealed at the next start
        value = self._vault.open(stored.removeprefix(SEALED)).get("value")
        if not isinstance(value, str):
            raise UnreadableSecret("a stored header value is not text")
        return value

    def sealed(self, stored: str) -> str:
        """`stored`, sealed under the current key if it was not yet (in the clear, or under
        a previous key). A value no key can read is left as it is."""
        if not is_sealed(stored):
            return self.seal(stored)
        if not self._rotating:  # no previous key: nothing to move, and no decryption per start
            return stored
        try:
            resealed = self._vault.reseal(stored.removeprefix(SEALED))
        except UnreadableSecret:
            return stored  # its enrichment fails, and says so, until the value is saved again
        return stored if resealed is None else SEALED + resealed


def is_sealed(stored: str) -> bool:
    """Whether a stored header value is sealed."""
    return stored.startswith(SEALED)


def _with_sealed_headers(
    events: list[dict[str, Any]], headers: HeaderVault
) -> list[dict[str, Any]] | None:
    """The stored rules with every header value sealed; None when all already were."""
    changed = False
    rules = []
    for rule in events:
        steps = []
        for step in rule.get("enrichments", []):
            values: dict[str, str] = step.get("headers", {})
            sealed = {name: headers.sealed(value) for name, value in values.items()}
            if sealed != values:
                changed = True
                step = {**step, "headers": sealed}
            steps.append(step)
        rules.append({**rule, "enrichments": steps} if "enrichments" in rule else rule)
    return rules if changed else None


@dataclass(frozen=True, slots=True)
class PlanToSeal:
    """A stored plan with header values not sealed under the current key, and its rules with
    them sealed under it."""

    plan_id: int
    workspace_id: int
    version: int
    rules: list[dict[str, Any]]


async def plans_to_seal(session: AsyncSession, headers: HeaderVault) -> list[PlanToSeal]:
    """The plans holding header values in the clear or sealed under a previous key, with
    their rules sealed under the current one; reads only (once every value is, a start finds
    nothing and writes nothing)."""
    rows = await session.execute(
        select(
            TrackingPlan.id, TrackingPlan.workspace_id, TrackingPlan.version, TrackingPlan.events
        )
    )
    found = []
    for plan_id, workspace_id, version, events in rows.all():
        rules = _with_sealed_headers(events, headers)
        if rules is not None:
            found.append(PlanToSeal(plan_id, workspace_id, version, rules))
    return found


async def seal_plans(session: AsyncSession, plans: Iterable[PlanToSeal]) -> set[int]:
    """Store the sealed rules of `plans`; the workspaces whose plans changed (their cached
    copies must go). Flushes, never commits. A plan changed since it was read (a newer
    version) is left to its own save, which seals."""
    workspaces: set[int] = set()
    for plan in plans:
        result = await session.execute(
            update(TrackingPlan)
            .where(TrackingPlan.id == plan.plan_id, TrackingPlan.version == plan.version)
            .values(events=plan.rules)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            workspaces.add(plan.workspace_id)
    return workspaces


async def seal_stored_headers(session: AsyncSession, headers: HeaderVault) -> set[int]:
    """`plans_to_seal` then `seal_plans` in one session."""
    return await seal_plans(session, await plans_to_seal(session, headers))
