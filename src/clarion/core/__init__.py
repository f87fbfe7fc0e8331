"""Shared foundations: settings, database, errors, clock and paging. Imports no domain."""
