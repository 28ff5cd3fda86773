"""Server settings: from the environment (``QAPTEN_…``) and an optional YAML settings file.

Tokens are stored as SHA-256 digests, never in clear; ``QAPTEN_ADMIN_TOKEN`` gives one admin token
directly (for scripts and containers)::

    # qapten-settings.yaml
    tokens:
      - {name: alice, sha256: 9f86d0…, scope: admin}
      - {name: bob, sha256: 2c26b4…, scope: approver, roles: [marketcom]}
      - {name: dashboard, sha256: fcde2b…, scope: viewer}
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from qapten.errors import ConfigurationError

Scope = Literal["admin", "approver", "viewer"]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenSpec(BaseModel):
    """One bearer token: who holds it, and what it may do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    """The identity recorded on decisions made with this token."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 hex digest of the token (``qapten token`` prints one)."""
    scope: Scope
    roles: tuple[str, ...] | None = None
    """For approvers: the roles whose proposals they may decide (none listed: every role)."""


class ApiSettings(BaseSettings):
    """Settings of the HTTP control plane."""

    model_config = SettingsConfigDict(env_prefix="QAPTEN_", extra="forbid")

    tokens: tuple[TokenSpec, ...] = ()
    admin_token: SecretStr | None = None
    """A clear-text admin token, from ``QAPTEN_ADMIN_TOKEN`` (kept in memory as a digest only)."""
    data_dir: Path = Path(".qapten")
    page_size: int = Field(50, ge=1, le=500)
    event_poll_seconds: float = Field(0.2, gt=0)
    """How often a live event stream looks for new events."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # What a program passes in code wins over the environment (no .env or secret files).
        return (init_settings, env_settings)

    @classmethod
    def load(cls, settings_file: Path | None = None) -> ApiSettings:
        """Defaults, overridden by the YAML settings file, overridden by the environment."""
        values: dict[str, Any] = {}
        if settings_file is not None:
            loaded = yaml.safe_load(settings_file.read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, dict):
                msg = f"{settings_file}: the settings file must be a mapping of setting: value"
                raise ConfigurationError(msg)
            values = loaded
        from_env = cls()  # the environment over the defaults
        return cls(**{**values, **from_env.model_dump(include=from_env.model_fields_set)})

    def all_tokens(self) -> tuple[TokenSpec, ...]:
        """Configured tokens, plus the admin token from the environment if there is one."""
        extra: tuple[TokenSpec, ...] = ()
        if self.admin_token is not None:
            digest = token_digest(self.admin_token.get_secret_value())
            extra = (TokenSpec(name="admin", sha256=digest, scope="admin"),)
        return (*self.tokens, *extra)
