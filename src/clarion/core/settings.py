"""Clarion's configuration, read once from `CLARION_*` environment variables.

Every field carries a description; the README's configuration table is checked against
them by a test, so the two never drift apart.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clarion.core import outbound

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
MIN_SECRET_KEY_CHARS = 16


@dataclass(frozen=True, slots=True)
class SecretKeys:
    """The secret key that signs and seals everything new, and the previous ones (newest
    first) still accepted for what they signed or sealed."""

    current: str
    previous: tuple[str, ...] = ()


class Settings(BaseSettings):
    """All of Clarion's settings; build through `get_settings()` in the application."""

    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    data_dir: Path = Field(
        default=Path("var"),
        description="Folder for local state: the SQLite database and the generated secret key.",
    )
    database_url: str = Field(
        default="",
        description=(
            "SQLAlchemy URL of the database. Default: a SQLite file `clarion.db` in the data "
            "folder. PostgreSQL: `postgresql://user@host:5432/name`."
        ),
    )
    database_pool_size: int = Field(
        default=10, ge=1, le=200, description="Connections kept open per process (PostgreSQL)."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite `synchronous` mode. FULL survives power loss after every commit; NORMAL "
            "survives process crashes only, and may be faster on slow disks."
        ),
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL (`redis://host:6379/0`); optional."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=MIN_SECRET_KEY_CHARS,
        description=(
            "Key (16 characters or more) for signing links and sealing stored credentials. "
            "When unset, one is generated on first run and kept in `<data dir>/secret_key`."
        ),
    )
    previous_secret_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated secret keys used before the current one, newest first, to "
            "rotate `CLARION_SECRET_KEY`: links already sent and inbox credentials made under "
            "them keep working, and each start re-seals what is stored under them with the "
            "current key. Drop a key once its links may stop working."
        ),
    )
    bootstrap_write_key: SecretStr | None = Field(
        default=None,
        min_length=8,
        description=(
            "When set, the default workspace gets a source write key with exactly this value "
            "(idempotent), for automation."
        ),
    )
    bootstrap_admin_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description=(
            "When set, the default workspace gets an admin API key with exactly this value "
            "(idempotent), for automation."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address `clarion serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `clarion serve` listens on.")
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://[^\s/?#<>,\"]+(/[^\s?#<>,\"]*)?$",
        description=(
            "Base URL end customers reach Clarion at, used in the links messages carry "
            "(unsubscribe, preferences, confirmation, tracking). Use https in production: "
            "one-click unsubscribe (RFC 8058) needs it."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server and workers."
    )
    worker_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Jobs each worker (in `clarion serve` or `clarion worker`) runs at once.",
    )
    outbound_allowed_networks: str = Field(
        default="",
        description=(
            "Comma-separated CIDR blocks that webhooks, SMS and push endpoints and enrichment "
            "calls may reach although they are not public (private, loopback, link-local), "
            "e.g. `10.20.0.0/16` for your own services. Every other non-public address is "
            "refused."
        ),
    )

    @field_validator("outbound_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        outbound.parse_networks(value)  # ValueError names the block that is not one
        return value

    @field_validator("previous_secret_keys")
    @classmethod
    def _previous_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                if len(key.strip()) < MIN_SECRET_KEY_CHARS:
                    raise ValueError(
                        f"each previous secret key needs {MIN_SECRET_KEY_CHARS} characters "
                        "or more (keys are separated by commas)"
                    )
        return value

    def outbound_policy(self) -> outbound.Policy:
        """Where outbound calls to configured addresses may connect."""
        return outbound.Policy(outbound.parse_networks(self.outbound_allowed_networks))

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'clarion.db'}"
        return self

    def resolved_secret_key(self) -> str:
        """The configured secret key, or the one kept under the data folder (made on first use)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / SECRET_KEY_FILE
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # Written whole under a name of its own, then linked into place: processes starting
        # together (a server and its workers) never read a half-written key, and all of
        # them keep the one that was linked first.
        draft = self.data_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(draft, path)
        except FileExistsError:
            return path.read_text().strip()
        finally:
            draft.unlink()
        return key

    def secret_keys(self) -> SecretKeys:
        """The current secret key (`resolved_secret_key`) and the previous ones."""
        current = self.resolved_secret_key()
        previous: tuple[str, ...] = ()
        if self.previous_secret_keys is not None:
            listed = self.previous_secret_keys.get_secret_value().split(",")
            previous = tuple(dict.fromkeys(k.strip() for k in listed if k.strip() != current))
        return SecretKeys(current, previous)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def settings_table() -> str:
    """The README's configuration table, in Markdown, built from the fields' descriptions."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "(unset)" if default in (None, "") else f"`{default}`"
        lines.append(f"| `CLARION_{name.upper()}` | {shown} | {info.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # regenerate the README's table: python -m clarion.core.settings
    import sys

    sys.stdout.write(settings_table())
