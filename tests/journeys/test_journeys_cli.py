"""`clarion journeys list|apply|export`: journeys as code, against both databases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.messaging import templates as message_templates
from clarion.workspaces import service as workspaces
from tests.conftest import run_cli
from tests.journeys.test_compiler import abandoned_cart, node


def make_template(url: str) -> int:
    """An email template in the default workspace; its id."""

    async def work() -> int:
        database = Database(url)
        try:
            async with database.write_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(
                    session, slug=workspaces.DEFAULT_WORKSPACE_SLUG
                )
                template, _ = await message_templates.create_template(
                    session, workspace_id=found.id, name="Cart", channel="email",
                    category="marketing", topic_id=None,
                    content={"subject": "Your cart", "html": "<p>Still there</p>"},
                    now=SystemClock().now(),
                )  # fmt: skip
                await session.commit()
                return template.id
        finally:
            await database.dispose()

    return asyncio.run(work())


def simple_graph(template_id: int) -> dict[str, Any]:
    graph = abandoned_cart()
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] in ("start", "hour", "first", "done")]
    node(graph, "first")["actions"][0]["template_id"] = template_id
    node(graph, "first")["next"] = "done"
    return graph


def test_apply_publish_export_round_trip(
    clarion: CliRunner, fresh_database: Database, tmp_path: Path
) -> None:
    run_cli(clarion, "migrate")
    template_id = make_template(fresh_database.url)
    file = tmp_path / "cart.json"
    body = {
        "name": "Abandoned cart",
        "description": "One reminder",
        "graph": simple_graph(template_id),
    }
    file.write_text(json.dumps(body), encoding="utf-8")

    created = run_cli(clarion, "journeys", "apply", str(file)).output.strip()
    assert created.startswith("journey ") and created.endswith(" created")
    journey_id = created.split()[1]
    assert run_cli(clarion, "journeys", "list").output.splitlines() == [
        f"{journey_id}\tdraft\tv-\tAbandoned cart"
    ]
    published = run_cli(clarion, "journeys", "apply", str(file), "--publish").output.strip()
    assert published == f"journey {journey_id} updated, version 1 published"
    exported = json.loads(run_cli(clarion, "journeys", "export", journey_id).output)
    assert exported == body
    assert (
        json.loads(run_cli(clarion, "journeys", "export", journey_id, "--version", "1").output)
        == body
    )

    # A fault is listed under its node, and nothing is published.
    node(body["graph"], "first")["actions"][0]["template_id"] = 999
    file.write_text(json.dumps(body), encoding="utf-8")
    refused = run_cli(clarion, "journeys", "apply", str(file), "--publish", code=1).output
    assert "nodes.first.actions.0.template_id: no such template" in refused
    assert run_cli(clarion, "journeys", "list").output.splitlines() == [
        f"{journey_id}\tlive\tv1\tAbandoned cart"
    ]
    assert (
        "no version 7"
        in run_cli(clarion, "journeys", "export", journey_id, "--version", "7", code=1).output
    )

    # The same as YAML, both ways.
    body = json.loads(run_cli(clarion, "journeys", "export", journey_id).output)
    as_yaml = run_cli(clarion, "journeys", "export", journey_id, "--format", "yaml").output
    assert yaml.safe_load(as_yaml) == body
    body["description"] = "One reminder, kept in YAML"
    yaml_file = tmp_path / "cart.yaml"
    yaml_file.write_text(yaml.safe_dump(body), encoding="utf-8")
    updated = run_cli(clarion, "journeys", "apply", str(yaml_file)).output.strip()
    assert updated == f"journey {journey_id} updated"
    exported = json.loads(run_cli(clarion, "journeys", "export", journey_id).output)
    assert exported["description"] == "One reminder, kept in YAML"
    yaml_file.write_text("name: [unclosed", encoding="utf-8")
    assert "is not YAML" in run_cli(clarion, "journeys", "apply", str(yaml_file), code=1).output

    file.write_text('{"name": ""}', encoding="utf-8")
    assert "name" in run_cli(clarion, "journeys", "apply", str(file), code=1).output
    missing = run_cli(clarion, "journeys", "apply", str(tmp_path / "none.json"), code=1).output
    assert "cannot read" in missing
