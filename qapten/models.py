"""Turn a model reference from the org chart or the CLI into a LangChain chat model."""

from __future__ import annotations

import os
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from qapten.errors import ConfigurationError
from qapten.orgchart import ModelRef

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


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
