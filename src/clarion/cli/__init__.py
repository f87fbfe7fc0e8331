"""The `clarion` command line (`main.py` holds the app)."""

from clarion.cli.main import app

__all__ = ["app"]
