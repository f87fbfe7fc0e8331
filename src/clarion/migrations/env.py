"""Alembic environment: runs on the connection `clarion.core.migrations` hands over."""

from __future__ import annotations

from alembic import context

from clarion.campaigns import models as _campaign_models  # noqa: F401 - registers tables
from clarion.core.database import Base
from clarion.core.jobs import models as _job_models  # noqa: F401 - registers tables
from clarion.ingest import models as _ingest_models  # noqa: F401 - registers tables
from clarion.ingest.plans import models as _plan_models  # noqa: F401 - registers tables
from clarion.journeys import models as _journey_models  # noqa: F401 - registers tables
from clarion.messaging import models as _messaging_models  # noqa: F401 - registers tables
from clarion.profiles import models as _profile_models  # noqa: F401 - registers tables
from clarion.segments import models as _segment_models  # noqa: F401 - registers tables
from clarion.workspaces import models as _workspace_models  # noqa: F401 - registers tables

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations through `clarion migrate`, which supplies the connection.")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
