"""The one way through, in code: which durable jobs exist and what each one calls.

Accepted events reach profiles (and later segments and journeys) through jobs that the
event writer enqueues in the transaction that stores the events.
"""

from __future__ import annotations

from clarion.core.jobs.worker import Registry


def job_registry() -> Registry:
    """Every kind of job Clarion runs, with its handler."""
    return Registry()
