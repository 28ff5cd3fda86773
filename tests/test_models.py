"""Model references from the YAML or the command line become LangChain chat models."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from qapten import ConfigurationError, ModelRef
from qapten.models import chat_model
from qapten.testing import ScriptedChatModel


def test_openai_compatible_server_with_the_key_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEAM_LLM_KEY", "sk-test-123")
    ref = ModelRef.parse(
        {
            "provider": "openai",
            "name": "qwen2.5",
            "api_key_env": "TEAM_LLM_KEY",
            "base_url": "http://127.0.0.1:8080/v1",
        }
    )
    model = chat_model(ref)
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "qwen2.5"
    assert model.openai_api_base == "http://127.0.0.1:8080/v1"
    assert model.openai_api_key is not None
    assert model.openai_api_key.get_secret_value() == "sk-test-123"


def test_missing_key_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="environment variable OPENAI_API_KEY"):
        chat_model(ModelRef.parse("openai:gpt-4o-mini"))


def test_scripted_model_from_a_file_relative_to_the_chart(tmp_path: Path) -> None:
    (tmp_path / "script.json").write_text('{"ceo": [{"text": "hi"}]}')
    model = chat_model(ModelRef.parse("scripted:script.json"), base_dir=tmp_path)
    assert isinstance(model, ScriptedChatModel)
    with pytest.raises(ConfigurationError, match="no script file at"):
        chat_model(ModelRef.parse("scripted:missing.json"), base_dir=tmp_path)
