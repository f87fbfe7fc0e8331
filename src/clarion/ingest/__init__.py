"""Segment-compatible ingestion: the tracking API and the append-only event log."""
