"""Workspaces, their sources, and the API keys that open them."""
