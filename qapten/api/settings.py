"""Server settings: from the environment (``QAPTEN_…``) and an optional YAML settings file.

Tokens are stored as SHA-256 digests, never in clear; ``QAPTEN_ADMIN_TOKEN`` gives one admin token
directly (for scripts and containers)::

    # qapten-settings.yaml
    tokens:
      - {name: alice, sha256: 9f86d0…, scope: admin}
      - {name: bob, sha256: 2c26b4…, scope: approver, roles: [marketcom]}
      - {name: dashboard, sha256: fcde2b…, scope: viewer}
    max_body_bytes: 1048576          # larger request bodies get 413
    rate_limit: 600/minute           # per token (per address without one); off to disable: 429
    cors_origins: [https://ops.example.com]   # none by default: no cross-origin browser access
    links_secret: …                  # signs one-click decision links; none: links are off
    links_ttl_seconds: 86400         # how long a link stays usable
    public_url: https://qapten.example.com   # where people reach this server (links in notices)
    channels: {slack: …, telegram: …, webhooks: […], routes: […]}   # qapten.channels.settings

In the environment: ``QAPTEN_RATE_LIMIT=600/minute``,
``QAPTEN_CORS_ORIGINS=https://a.example,https://b.example``, ``QAPTEN_LINKS_SECRET=…``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from qapten.api.rates import Rate
from qapten.channels.settings import ChannelSettings
from qapten.errors import ConfigurationError

Scope = Literal["admin", "approver", "viewer"]
MIN_LINKS_SECRET = 32


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
    team: str | None = None
    """On a deployment of several org charts, the team (chart) the token belongs to; it sees
    and decides nothing of the others. Required there; unused with one chart."""


class ApiSettings(BaseSettings):
    """Settings of the HTTP control plane."""

    model_config = SettingsConfigDict(env_prefix="QAPTEN_", extra="forbid")

    tokens: tuple[TokenSpec, ...] = ()
    admin_token: SecretStr | None = None
    """A clear-text admin token, from ``QAPTEN_ADMIN_TOKEN`` (kept in memory as a digest only)."""
    data_dir: Path = Path(".qapten")
    db: str | None = None
    """The database URL (``--db``): ``sqlite:///FILE`` (by default, in the data directory) or
    ``postgresql://USER:PASSWORD@HOST:PORT/NAME``."""
    workers: bool = False
    """Leave runs to ``qapten worker`` processes (PostgreSQL): the server only records and
    enqueues, so that several servers can serve one database side by side."""
    page_size: int = Field(50, ge=1, le=500)
    event_poll_seconds: float = Field(0.2, gt=0)
    """How often a live event stream looks for new events."""
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    """Request bodies larger than this are refused with 413, before the app reads them."""
    rate_limit: str | None = "600/minute"
    """Requests per caller, ``N/second|minute|hour`` in bursts of up to N; None or ``off``: no
    limit. A caller is a token's name, or the client address for requests without a known token;
    ``/healthz`` and ``/metrics`` are not counted."""
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    """Origins (``https://host[:port]``) whose pages may call the API from a browser; none by
    default, and then no response carries CORS headers."""
    links_secret: SecretStr | None = None
    """Signs one-click decision links (qapten.api.links), ``QAPTEN_LINKS_SECRET``; without it,
    links are off. Changing it voids every link made before."""
    links_ttl_seconds: int = Field(86400, ge=60)
    """How long a decision link stays usable after it is made."""
    public_url: str | None = Field(None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    """The address people reach this server at (``https://qapten.example.com``): the links
    that notices carry start with it. Links made over the API use the request's address."""
    channels: ChannelSettings = ChannelSettings()
    """Chat channels and webhooks that notify people and let them decide (qapten.channels)."""

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _check_rate(cls, value: object) -> object:
        # YAML reads a bare `off` as False.
        if value is None or value is False or (isinstance(value, str) and value.lower() == "off"):
            return None
        return str(Rate.parse(str(value)))

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):  # the environment: comma-separated
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        origins = tuple(origin.strip().rstrip("/").lower() for origin in origins)
        for origin in origins:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username
            ):
                msg = (
                    f"cors_origins: {origin!r} is not an origin; write scheme://host[:port], "
                    "like https://ops.example.com, with no path (and no '*': list each origin)"
                )
                raise ValueError(msg)
        return tuple(dict.fromkeys(origins))

    @field_validator("links_secret")
    @classmethod
    def _check_links_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        # Anyone who knows it can decide anything as anyone: a short one could be guessed.
        if secret is not None and len(secret.get_secret_value()) < MIN_LINKS_SECRET:
            msg = (
                f"links_secret: use at least {MIN_LINKS_SECRET} characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)"
            )
            raise ValueError(msg)
        return secret

    @model_validator(mode="after")
    def _links_in_notices(self) -> ApiSettings:
        for index, hook in enumerate(self.channels.webhooks):
            if hook.links_for and (self.links_secret is None or self.public_url is None):
                msg = (
                    f"channels.webhooks.{index}.links_for: links in notices need "
                    "links_secret and public_url"
                )
                raise ValueError(msg)
        return self

    def rate(self) -> Rate | None:
        """`rate_limit`, parsed."""
        return None if self.rate_limit is None else Rate.parse(self.rate_limit)

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

    def team_tokens(self, team: str, teams: Collection[str]) -> tuple[TokenSpec, ...]:
        """The tokens of `team` on a deployment of `teams`. With one team, every token; with
        several, each token must name its team, and there is no deployment-wide admin token:
        a token that reached every team would have to say which one it means each time."""
        if len(teams) == 1:
            return self.all_tokens()
        if self.admin_token is not None:
            msg = (
                "QAPTEN_ADMIN_TOKEN serves a deployment of one org chart; with several, give "
                "each team its own tokens (team: NAME) in the settings file"
            )
            raise ConfigurationError(msg)
        for spec in self.tokens:
            if spec.team not in teams:
                named = "names no team" if spec.team is None else f"names team {spec.team!r}"
                msg = (
                    f"tokens: {spec.name!r} {named}; this deployment's teams are "
                    f"{', '.join(sorted(teams))}"
                )
                raise ConfigurationError(msg)
        return tuple(spec for spec in self.tokens if spec.team == team)

    def all_tokens(self) -> tuple[TokenSpec, ...]:
        """Configured tokens, plus the admin token from the environment if there is one."""
        extra: tuple[TokenSpec, ...] = ()
        if self.admin_token is not None:
            digest = token_digest(self.admin_token.get_secret_value())
            extra = (TokenSpec(name="admin", sha256=digest, scope="admin"),)
        return (*self.tokens, *extra)
