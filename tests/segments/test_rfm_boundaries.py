"""RFM boundaries are computed in the currency most buyers paid in: one of ISO 4217's
shape, whatever older profiles hold."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from clarion.core.database import Database
from clarion.profiles.models import Profile
from clarion.profiles.service import upsert_profile
from clarion.segments.recompute import compute_rfm_boundaries
from tests.conftest import Tenant


async def test_a_currency_not_shaped_like_a_code_is_passed_over(
    database: Database, tenant: Tenant
) -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    # Kept before currencies were checked ("ßßß" upper-cased): too long for the column.
    revenues = [{"SSSSSS": 900}, {"SSSSSS": 700, "EUR": 500}, {"EUR": 300}]
    async with database.write_session() as session:
        for number, revenue in enumerate(revenues):
            profile = await upsert_profile(
                session, workspace_id=tenant.id, user_id=f"b{number}", traits={}, now=now
            )
            computed = {"orders": 1, "last_order_at": now.isoformat(), "revenue": revenue}
            await session.execute(
                update(Profile).where(Profile.id == profile.id).values(computed=computed)
            )
        boundaries = await compute_rfm_boundaries(session, workspace_id=tenant.id, now=now)
        await session.commit()
    assert boundaries is not None
    assert (boundaries.currency, boundaries.buyers) == ("EUR", 3)
