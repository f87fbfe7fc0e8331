"""Clarion: a self-hosted, open-source personalized marketing platform."""

__version__ = "0.1.0"
