"""Tracking plans: event schemas per workspace and source, validation, and enrichment.

The pipeline uses `TrackingPlans` (one per process); the management API is in `api.py`.
"""

from clarion.ingest.plans.review import Review, TrackingPlans, Violation, ViolationError

__all__ = ["Review", "TrackingPlans", "Violation", "ViolationError"]
