"""The ``channels:`` settings: routes, defaults and secrets read from the environment, and each
mistake refused in one line that names its field, before the server makes anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from qapten.api.settings import ApiSettings
from qapten.channels.runtime import check_channels
from qapten.channels.settings import ChannelSettings

from ..conftest import ORG
from ..test_cli_serve import clean_env

SLACK = {"bot_token": "xoxb-1", "signing_secret": "s" * 20, "channel": "C0DEFAULT"}
TELEGRAM = {"bot_token": "1:abc", "chat_id": -100}
HOOK = {"name": "ops", "url": "https://hooks.example.com/q", "secret": "w" * 32}


def channels(**values: object) -> ChannelSettings:
    return ChannelSettings.model_validate(values)


def test_routes_pick_destinations_and_the_rest_go_to_every_default() -> None:
    config = channels(
        slack=SLACK,
        telegram=TELEGRAM,
        webhooks=[HOOK],
        routes=[
            {"role": "marketcom", "to": ["slack:C0MARKETING"]},
            {"kind": "action", "act": "deploy", "to": ["telegram:42", "webhook:ops"]},
            {"role": "cto", "to": ["slack"]},
        ],
    )
    assert config.route("marketcom", "plan", "delegate") == ["slack:C0MARKETING"]
    assert config.route("cto", "action", "deploy") == ["telegram:42", "webhook:ops"]
    assert config.route("cto", "action", "workspace.write_file") == ["slack:C0DEFAULT"]
    assert config.route("ceo", "plan", "delegate") == [
        "webhook:ops",
        "slack:C0DEFAULT",
        "telegram:-100",
    ]
    assert config.telegram_chats() == {-100, 42}


def test_a_secret_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_HOOK_SECRET", "e" * 32)
    config = channels(webhooks=[{**HOOK, "secret": "env:OPS_HOOK_SECRET"}])
    assert config.webhooks[0].secret.get_secret_value() == "e" * 32
    monkeypatch.delenv("OPS_HOOK_SECRET")
    with pytest.raises(ValidationError, match="OPS_HOOK_SECRET is not set"):
        channels(webhooks=[{**HOOK, "secret": "env:OPS_HOOK_SECRET"}])


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"routes": [{"to": ["slack"]}]}, "routes.0.to: 'slack' is not configured"),
        ({"webhooks": [HOOK], "routes": [{"to": ["webhook:dev"]}]}, "'webhook:dev' is not"),
        ({"slack": SLACK, "routes": [{"to": ["email:me"]}]}, "is not a destination"),
        ({"telegram": TELEGRAM, "routes": [{"to": ["telegram:me"]}]}, "chat id is a number"),
        ({"webhooks": [HOOK, HOOK]}, "the name 'ops' is used twice"),
        ({"webhooks": [{**HOOK, "secret": "short"}]}, "at least 16 characters"),
        ({"webhooks": [{**HOOK, "url": "ftp://x"}]}, r"webhooks\.0\.url\n"),
        ({"slack": {**SLACK, "colour": "red"}}, r"slack\.colour\n.*Extra inputs"),
        (
            {"routes": [{"kind": "deploy", "to": ["webhook:ops"]}], "webhooks": [HOOK]},
            r"routes\.0\.kind\n",
        ),
    ],
)
def test_mistakes_name_their_field(values: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        channels(**values)


def test_links_in_notices_need_a_secret_and_a_public_url() -> None:
    hook = {**HOOK, "links_for": "alice"}
    with pytest.raises(ValidationError, match=r"webhooks\.0\.links_for: links in notices need"):
        ApiSettings(channels={"webhooks": [hook]})  # type: ignore[arg-type]
    ApiSettings(
        channels={"webhooks": [hook]},  # type: ignore[arg-type]
        links_secret="s" * 40,
        public_url="https://qapten.example.com",
    )


def test_identities_must_be_token_names() -> None:
    config = channels(slack={**SLACK, "users": {"U1": "alice", "U2": "bob"}})
    check_channels(config, ["alice", "bob"])
    with pytest.raises(Exception, match=r"channels.slack.users.U2: 'bob' is not the name of a"):
        check_channels(config, ["alice"])


def test_serve_refuses_a_channel_mistake_in_one_line_before_making_anything(
    tmp_path: Path,
) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "channels:\n  telegram: {bot_token: '1:abc', chat_id: 5, users: {'7': nobody}}\n",
        encoding="utf-8",
    )
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "qapten.cli", "serve", str(ORG)]
    refused = subprocess.run(
        [*command, "--settings", str(settings), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(
        "error: settings: channels.telegram.users.7: 'nobody' is not the name of a token"
    )
    assert len(refused.stderr.splitlines()) == 1
    assert not data_dir.exists()
