"""Profiles: one trustworthy profile per customer, built from the event log."""
