"""Enrichment header values (API tokens, as a rule) are stored sealed, as channel
credentials are: encrypted with a key derived from Clarion's secret key (`core/crypto.py`,
purpose "enrichment headers"), so the database, its backups and the plans cached in Redis
never hold them in the clear. Names stay readable; the API shows values as `<hidden>`.

A stored value is `sealed:` and the sealed document `{"value": ...}`. Values saved before
sealing existed are read as they are, and sealed when a process starts
(`seal_stored_headers`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.crypto import UnreadableSecret, Vault
from clarion.ingest.plans.models import TrackingPlan

SEALED = "sealed:"


class HeaderVault:
    """Seals and opens enrichment header values under the deployment's secret key."""

    def __init__(self, secret_key: str) -> None:
        self._vault = Vault(secret_key, purpose="enrichment headers")

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
        """`stored`, sealed if it was not yet."""
        return stored if is_sealed(stored) else self.seal(stored)


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
            if any(not is_sealed(value) for value in values.values()):
                changed = True
                step = {**step, "headers": {k: headers.sealed(v) for k, v in values.items()}}
            steps.append(step)
        rules.append({**rule, "enrichments": steps} if "enrichments" in rule else rule)
    return rules if changed else None


async def seal_stored_headers(session: AsyncSession, headers: HeaderVault) -> set[int]:
    """Seal the header values of every plan saved before they were sealed; the workspaces
    whose plans changed (their cached copies must go). Flushes, never commits. A plan
    changed meanwhile (a newer version) is left to its own save, which seals."""
    workspaces: set[int] = set()
    rows = await session.execute(
        select(
            TrackingPlan.id, TrackingPlan.workspace_id, TrackingPlan.version, TrackingPlan.events
        )
    )
    for plan_id, workspace_id, version, events in rows.all():
        rules = _with_sealed_headers(events, headers)
        if rules is None:
            continue
        result = await session.execute(
            update(TrackingPlan)
            .where(TrackingPlan.id == plan_id, TrackingPlan.version == version)
            .values(events=rules)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            workspaces.add(workspace_id)
    return workspaces
