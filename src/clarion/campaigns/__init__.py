"""Campaigns: one-off and scheduled broadcasts of a template to a segment or a list."""
