"""`clarion campaigns list|show|send|pause|resume|cancel`, against both databases."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from clarion.campaigns import service
from clarion.campaigns.schemas import CampaignCreate
from clarion.core.clock import SystemClock
from clarion.core.crypto import Vault
from clarion.core.database import Database
from clarion.messaging import channel_config
from clarion.messaging import templates as message_templates
from clarion.workspaces import service as workspaces
from tests.campaigns.conftest import NEWS
from tests.conftest import run_cli


def make_campaigns(url: str) -> tuple[int, int]:
    """Two draft campaigns to u1 and u2 in the default workspace (and an email channel)."""

    async def work() -> tuple[int, int]:
        database = Database(url)
        now = SystemClock().now()
        try:
            async with database.write_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(
                    session, slug=workspaces.DEFAULT_WORKSPACE_SLUG
                )
                template, _ = await message_templates.create_template(
                    session, workspace_id=found.id, name="News", channel="email",
                    category="marketing", topic_id=None, content=NEWS, now=now,
                )  # fmt: skip
                await channel_config.create_channel(
                    session, workspace_id=found.id, vault=Vault("x" * 40), name="Mail",
                    kind="email", settings={"host": "127.0.0.1", "from_address": "a@b.example"},
                    secrets={}, rate_per_second=None, is_default=None, now=now,
                )  # fmt: skip
                ids = []
                for name in ("First", "Second"):
                    body = CampaignCreate.model_validate(
                        {
                            "name": name,
                            "audience": {"type": "list", "user_ids": ["u1", "u2"]},
                            "template_id": template.id,
                        }
                    )
                    campaign = await service.create_campaign(
                        session, workspace_id=found.id, body=body, now=now
                    )
                    ids.append(campaign.id)
                await session.commit()
                return ids[0], ids[1]
        finally:
            await database.dispose()

    return asyncio.run(work())


def test_campaign_commands(clarion: CliRunner, fresh_database: Database, tmp_path: Path) -> None:
    run_cli(clarion, "migrate")
    people = tmp_path / "people.csv"
    people.write_text("user_id,email\nu1,u1@example.com\nu2,u2@example.com\n", encoding="utf-8")
    run_cli(clarion, "import", "profiles", str(people))
    first, second = make_campaigns(fresh_database.url)

    listed = run_cli(clarion, "campaigns", "list").output.splitlines()
    assert listed == [
        f"{second}\tdraft\tSecond\t0 recipients\t-",
        f"{first}\tdraft\tFirst\t0 recipients\t-",
    ]

    assert run_cli(clarion, "campaigns", "send", str(first)).output.strip() == (
        f"campaign {first} sending"
    )
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    sent = run_cli(clarion, "campaigns", "send", str(second), "--at", later).output
    assert sent.strip() == f"campaign {second} scheduled"
    assert (
        f"{second}\tscheduled\tSecond\t0 recipients\tat "
        in run_cli(clarion, "campaigns", "list", "--state", "scheduled").output
    )

    assert run_cli(clarion, "campaigns", "pause", str(first)).output.strip() == (
        f"campaign {first} paused"
    )
    assert run_cli(clarion, "campaigns", "resume", str(first)).output.strip() == (
        f"campaign {first} sending"
    )
    assert run_cli(clarion, "campaigns", "cancel", str(second)).output.strip() == (
        f"campaign {second} cancelled"
    )
    shown = json.loads(run_cli(clarion, "campaigns", "show", str(second)).output)
    assert shown["campaign"]["state"] == "cancelled"
    assert shown["results"]["audience"] == 0

    refused = run_cli(clarion, "campaigns", "resume", str(second), code=1).output
    assert "cannot be resumed" in refused
    bad = run_cli(clarion, "campaigns", "send", str(second), "--at", "tomorrow", code=1).output
    assert "at:" in bad
    assert "No campaign 999" in run_cli(clarion, "campaigns", "show", "999", code=1).output


def test_campaign_commands_refuse_bad_input_without_a_traceback(
    clarion: CliRunner, fresh_database: Database
) -> None:
    run_cli(clarion, "migrate")
    first, _ = make_campaigns(fresh_database.url)

    bogus = run_cli(clarion, "campaigns", "list", "--state", "bogus", code=2).output
    assert "--state" in bogus and "'scheduled'" in bogus
    for command in ("show", "send", "pause", "resume", "cancel"):
        huge = run_cli(clarion, "campaigns", command, "99999999999999999999", code=2)
        assert "9223372036854775807" in huge.output
        assert not isinstance(huge.exception, OverflowError)
    both = run_cli(
        clarion, "campaigns", "send", str(first), "--at", "2030-01-01T09:00:00Z",
        "--local-date", "2030-01-01", "--local-time", "09:00", code=2,
    )  # fmt: skip
    assert "--at" in both.output and "--local-date" in both.output
    ancient = run_cli(
        clarion, "campaigns", "send", str(first), "--local-date", "0001-01-01",
        "--local-time", "00:00", code=1,
    )  # fmt: skip
    assert "local_date:" in ancient.output and ancient.exception is not None
    assert not isinstance(ancient.exception, OverflowError)
    listed = run_cli(clarion, "campaigns", "list", "--state", "draft").output
    assert len(listed.splitlines()) == 2  # nothing was sent
