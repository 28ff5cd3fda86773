"""Model references (`local`, `openai:NAME`, `scripted:FILE`, or a mapping) as written in the org
chart or on the command line, and the factory that turns one into a LangChain chat model."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from qapten.errors import ConfigurationError
from qapten.yaml_source import located_error

if TYPE_CHECKING:  # LangChain loads when a model is built, not when a chart is read
    from langchain_core.language_models import BaseChatModel

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
PROVIDERS: tuple[str, ...] = ("local", "openai", "scripted")
OPENAI_ONLY = ("base_url", "api_key_env", "max_retries", "timeout")
DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 300.0
"""Seconds; ChatOpenAI's own default is no timeout at all, so a hung server would hang the run."""
CONNECT_TIMEOUT = 10.0
"""Seconds to reach the server: an unreachable host fails fast, whatever `timeout` says."""
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
    max_retries: int | None = Field(None, ge=0, le=20)
    """For openai: how often a failed request is sent again (rate limits, 5xx, timeouts, refused
    connections), with exponential backoff and jitter, waiting as long as the server's
    Retry-After asks up to 2 minutes (default 2, so 3 tries in all)."""
    timeout: float | None = Field(None, gt=0)
    """For openai: seconds to wait for each answer before it counts as failed (default 300)."""

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
        for key in OPENAI_ONLY:
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
    from qapten.local_model import embedded_model

    # The server starts when a swarm opens (`EmbeddedModel.start`), not here: building a chat
    # model must stay cheap and free of side effects.
    return embedded_model().chat_model()


def _openai(ref: ModelRef) -> BaseChatModel:
    from langchain_openai import ChatOpenAI
    from openai import DefaultAsyncHttpxClient, Timeout

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
    # The openai client inside retries 408/409/429/5xx, timeouts and refused connections itself,
    # with backoff and jitter, honouring Retry-After (up to 2 minutes; a longer one is not
    # retried): configured here rather than wrapped in a loop of our own.
    timeout = ref.timeout or DEFAULT_TIMEOUT
    return ChatOpenAI(
        model=ref.name,
        base_url=ref.base_url,
        api_key=SecretStr(key),
        max_retries=DEFAULT_MAX_RETRIES if ref.max_retries is None else ref.max_retries,
        timeout=Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
        # Its own connections, which `close_model` closes (ChatOpenAI may share a cached one).
        http_async_client=DefaultAsyncHttpxClient(),
    )


async def close_model(model: BaseChatModel) -> None:
    """Close the connections of a model `chat_model` built, before its event loop ends."""
    client = getattr(model, "http_async_client", None)
    if client is not None:
        await client.aclose()


def server_errors() -> tuple[type[Exception], ...]:
    """What a model's client raises when the server gave no answer, once its own retries are
    spent: the openai client's errors (HTTP status, connection, timeout) and httpx's.

    Use as ``except server_errors():`` -- evaluated only when something was raised, so the
    openai package (0.4 s to import) is loaded only then.
    """
    import openai

    return (openai.APIError, httpx.HTTPError)


def describe_failure(model: object, exc: Exception) -> str:
    """One line for a task's failure: which model, at which server, after how many tries, why.

    ``model openai:gpt-4o-mini at http://127.0.0.1:8080/v1 failed after 3 tries: 503 Service
    Unavailable: overloaded`` -- never a traceback, never the API key.
    """
    chat = _chat_model_in(model)
    what = getattr(chat, "model_name", None) or type(chat).__name__
    if "openai" in str(getattr(chat, "_llm_type", "")):
        what = f"openai:{what}"
    where = getattr(chat, "openai_api_base", None)
    request = _request_of(exc)
    if where is None and request is not None:
        where = f"{request.url.scheme}://{request.url.netloc.decode()}"
    place = f" at {where}" if where else ""
    count = request.headers.get("x-stainless-retry-count") if request is not None else None
    tries = f" after {int(count) + 1} {'try' if count == '0' else 'tries'}" if count else ""
    reason = " ".join(_why(exc, request).split())
    return f"model {what}{place} failed{tries}: {reason[:300]}"


def _chat_model_in(model: object) -> object:
    # A role's model is the chat model wrapped by bind_tools (a binding), maybe in a sequence.
    for _ in range(4):
        inner = getattr(model, "bound", None) or getattr(model, "first", None)
        if inner is None:
            break
        model = inner
    return model


def _request_of(exc: Exception) -> Any:
    try:
        return getattr(exc, "request", None)
    except RuntimeError:  # httpx raises it for an error made without a request
        return None


def _why(exc: Exception, request: Any) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = f"{exc.status_code} {exc.response.reason_phrase}".strip()
        body = exc.body.get("error", exc.body) if isinstance(exc.body, Mapping) else exc.body
        detail = body.get("message") if isinstance(body, Mapping) else body
        return f"{status}: {detail}" if detail else status
    if isinstance(exc, openai.APITimeoutError):
        limits = request.extensions.get("timeout", {}) if request is not None else {}
        read = limits.get("read")
        return f"no answer within {read:g} s (timeout)" if read else "timed out"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        # The words that help ("Connection refused") are at the bottom of the chain of causes.
        root: BaseException = exc
        for _ in range(10):
            below = root.__cause__ or root.__context__
            if below is None:
                break
            root = below
        if isinstance(root, OSError) and root.errno:
            return f"cannot connect: {os.strerror(root.errno)}"
        return f"cannot connect: {root}"
    return f"{type(exc).__name__}: {exc}"
