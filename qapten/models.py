"""Model references (`local`, `openai:NAME`, `scripted:FILE`, or a mapping) as written in the org
chart or on the command line, and the factory that turns one into a LangChain chat model."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from qapten.errors import ConfigurationError
from qapten.yaml_source import located_error

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
PROVIDERS: tuple[str, ...] = ("local", "openai", "scripted")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password)$", re.IGNORECASE)


def _split_model_spec(spec: str) -> dict[str, str | None]:
    """`local`, `openai:NAME` or `scripted:FILE` as the fields of a `ModelRef`."""
    provider, _, name = spec.partition(":")
    if provider not in PROVIDERS:
        choices = ", ".join(PROVIDERS)
        msg = f"unknown model provider {provider!r} in {spec!r}; choose one of {choices}"
        raise located_error(msg)
    return {"provider": provider, "name": name or None}


class ModelRef(BaseModel):
    """The chat model a role uses: the embedded local model, an OpenAI-compatible server, or a
    scripted model (for demos and tests)."""

    # hide_input_in_errors: a mistyped mapping may hold a pasted API key; errors must not echo it.
    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    provider: Literal["local", "openai", "scripted"]
    """local (the embedded default), openai (any OpenAI-compatible server) or scripted."""
    name: str | None = Field(None, min_length=1)
    """The model's name for openai; the script file for scripted."""
    base_url: str | None = None
    """The server's URL, for openai only (default: OpenAI's)."""
    api_key_env: str | None = None
    """The NAME of the environment variable holding the API key (default: OPENAI_API_KEY)."""

    @classmethod
    def parse(cls, value: str | Mapping[str, Any]) -> ModelRef:
        """Read `local`, `openai:NAME`, `scripted:FILE`, or a mapping of the fields.

        Raises `ValueError` (pydantic's `ValidationError` for a mapping) when it is neither.
        """
        return cls.model_validate(_split_model_spec(value) if isinstance(value, str) else value)

    def __str__(self) -> str:
        return self.provider if self.name is None else f"{self.provider}:{self.name}"

    @model_validator(mode="before")
    @classmethod
    def _refuse_secrets(cls, data: Any) -> Any:
        for key in data if isinstance(data, Mapping) else ():
            if isinstance(key, str) and key != "api_key_env" and _SECRET_KEY.search(key):
                msg = (
                    f"{key!r} would put a secret in the chart: name the environment variable "
                    "that holds it instead, with api_key_env (e.g. api_key_env: OPENAI_API_KEY)"
                )
                raise located_error(msg, at=(key,), at_key=True)
        return data

    @model_validator(mode="after")
    def _check_fields_of_provider(self) -> Self:
        if self.provider != "local" and self.name is None:
            what = "a model name" if self.provider == "openai" else "a script file"
            msg = f"provider {self.provider!r} needs {what}: '{self.provider}:NAME' or name: NAME"
            raise located_error(msg)
        for key in ("base_url", "api_key_env"):
            if getattr(self, key) is not None and self.provider != "openai":
                msg = f"{key} is for provider 'openai' only, not {self.provider!r}"
                raise located_error(msg, at=(key,), at_key=True)
        # Never echo the value: someone may have pasted the key itself here.
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            msg = "api_key_env takes the NAME of an environment variable (like OPENAI_API_KEY)"
            raise located_error(f"{msg}, not the key itself", at=("api_key_env",))
        return self


def _model_from_spec(value: Any) -> Any:
    return _split_model_spec(value) if isinstance(value, str) else value


_ModelSpec = Annotated[
    str,
    Field(
        pattern=r"^(local(:.+)?|(openai|scripted):.+)$",
        examples=["local", "openai:gpt-4o-mini", "scripted:script.json"],
    ),
]
ModelField = Annotated[
    ModelRef | None,
    BeforeValidator(_model_from_spec, json_schema_input_type=_ModelSpec | ModelRef | None),
]


def chat_model(ref: ModelRef, *, base_dir: Path | None = None) -> BaseChatModel:
    """Build the chat model `ref` names; the API key is read from the environment, never YAML."""
    if ref.provider == "openai":
        return _openai(ref)
    if ref.provider == "scripted":
        from qapten.testing import ScriptedChatModel

        if not ref.name:
            msg = "model 'scripted' needs a script file: scripted:FILE.json"
            raise ConfigurationError(msg)
        path = Path(ref.name)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            msg = f"scripted model: no script file at {path}"
            raise ConfigurationError(msg)
        return ScriptedChatModel.from_file(path)
    msg = (
        "the embedded local model is not available in this build yet; pass a chat model "
        "(Swarm.from_yaml(..., model=...)) or name one in the org chart, e.g. "
        "'model: openai:gpt-4o-mini' or 'model: scripted:script.json'"
    )
    raise ConfigurationError(msg)


def _openai(ref: ModelRef) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    if not ref.name:
        msg = "model 'openai' needs a model name: openai:NAME"
        raise ConfigurationError(msg)
    key_env = ref.api_key_env or DEFAULT_KEY_ENV
    key = os.environ.get(key_env)
    if key is None:
        if ref.base_url is None:
            msg = f"model openai:{ref.name} needs an API key in the environment variable {key_env}"
            raise ConfigurationError(msg)
        key = "not-needed"  # local OpenAI-compatible servers (llama.cpp, vLLM, Ollama) take any key
    return ChatOpenAI(model=ref.name, base_url=ref.base_url, api_key=SecretStr(key))
