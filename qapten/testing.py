"""Test helpers that ship with Qapten: a deterministic chat model and script builders.

`ScriptedChatModel` replays scripted answers, one role at a time, and records every call, so a test
can assert what each role was shown. It never touches the network::

    model = ScriptedChatModel({
        "ceo": [delegate(cto="Pick a cloud"), deliver("Done: we move to a European cloud.")],
        "cto": [use("workspace.write_file", path="plan.md", content="..."), deliver("plan.md")],
    })
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, overload

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr

from qapten.acts import wire_name
from qapten.errors import ScriptExhausted

ROLE_METADATA_KEY = "qapten_role"
"""The engine puts the calling role's name under this key in the model call's metadata."""

Response = AIMessage | str | Mapping[str, Any] | Callable[["RecordedCall"], Any]


def use(tool: str, /, **args: Any) -> dict[str, Any]:
    """A scripted answer that calls `tool` (its YAML name, e.g. ``workspace.write_file``)."""
    return {"tool": tool, "args": args}


def delegate(**briefs: str) -> dict[str, Any]:
    """A scripted plan: ``delegate(cto="...", support="...")``."""
    return use("delegate", tasks=[{"to": role, "brief": brief} for role, brief in briefs.items()])


def deliver(result: str) -> dict[str, Any]:
    """A scripted deliverable."""
    return use("deliver", result=result)


def ask(question: str) -> dict[str, Any]:
    """A scripted question to the human."""
    return use("ask_human", question=question)


class Endless(Sequence[Response]):
    """A script that gives the same answer to every call, as many as come: with a callable
    answer that reads the prompt, any number of runs at once can share one scripted model."""

    def __init__(self, answer: Response) -> None:
        self._answer = answer

    def __len__(self) -> int:
        return 2**62

    @overload
    def __getitem__(self, index: int) -> Response: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Response]: ...
    def __getitem__(self, index: int | slice) -> Response | Sequence[Response]:
        if isinstance(index, slice):
            raise TypeError("an endless script cannot be sliced")
        return self._answer


@dataclass
class RecordedCall:
    """One call the scripted model received."""

    role: str | None
    messages: list[BaseMessage]
    tools: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        """Everything the model was shown, as one text (handy for `in` assertions)."""
        return "\n".join(str(m.content) for m in self.messages)


class ScriptedChatModel(BaseChatModel):
    """A chat model that replays a script: a list of answers, or one list per role.

    Each answer is an `AIMessage`, a plain string (a text answer), a mapping made by `use`,
    `delegate`, `deliver` or `ask`, or a callable that receives the `RecordedCall` and returns one
    of those. A role with no answer left raises `ScriptExhausted` naming the role and the call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    latency: float = 0.0
    """Seconds each call takes, as a remote model's would (benchmarks of many workers)."""
    keep_calls: bool = True
    """Record each call in `calls`; a model loaded from a file for a long-lived server or
    worker does not, or its memory would grow with every call."""
    # Typed `Any` so pydantic keeps the answers as given (it would coerce strings to messages).
    script: Any = Field(default_factory=list)
    calls: list[RecordedCall] = Field(default_factory=list)
    _positions: dict[str | None, int] = PrivateAttr(default_factory=dict)
    _ids: Any = PrivateAttr(default_factory=itertools.count)

    def __init__(
        self, script: Mapping[str, Sequence[Response]] | Sequence[Response] = (), **kwargs: Any
    ) -> None:
        super().__init__(script=script, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedChatModel:
        """Load a JSON script: ``{"ceo": [{"tool": "delegate", "args": {...}}, ...], ...}``.

        A role may instead answer by rules, for any number of calls and runs at once (several
        processes can share such a script): ``{"ceo": {"rules": [{"if_prompt_contains":
        "Result from", "then": ANSWER}, {"then": ANSWER}]}}``; the first rule whose text is
        in the prompt answers. ``{"latency_ms": 50, "script": {...}}`` makes each call take
        that long.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        latency = 0.0
        if isinstance(data, Mapping) and "script" in data:
            latency = float(data.get("latency_ms", 0)) / 1000
            data = data["script"]
        if isinstance(data, Mapping):
            data = {
                role: Endless(_by_rules(role, answers["rules"]))
                if isinstance(answers, Mapping) and "rules" in answers
                else answers
                for role, answers in data.items()
            }
        return cls(data, latency=latency, keep_calls=False)

    @property
    def _llm_type(self) -> str:
        return "qapten-scripted"

    def calls_for(self, role: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.role == role]

    def remaining(self, role: str | None = None) -> int:
        """How many scripted answers are left (for `role`, or the whole flat script)."""
        return len(self._answers_for(role)) - self._positions.get(self._key(role), 0)

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)

    def _key(self, role: str | None) -> str | None:
        return role if isinstance(self.script, Mapping) else None

    def _answers_for(self, role: str | None) -> Sequence[Response]:
        if isinstance(self.script, Mapping):
            return cast(Sequence[Response], self.script.get(role or "", ()))
        return cast(Sequence[Response], self.script)

    def _next(self, role: str | None, messages: list[BaseMessage], tools: list[Any]) -> AIMessage:
        names = [t["function"]["name"] for t in tools if isinstance(t, Mapping) and "function" in t]
        call = RecordedCall(role=role, messages=list(messages), tools=names)
        if self.keep_calls:
            self.calls.append(call)
        key = self._key(role)
        position = self._positions.get(key, 0)
        answers = self._answers_for(role)
        if position >= len(answers):
            who = f"role {role!r}" if key is not None else "the script"
            msg = (
                f"the scripted model has no answer left for {who}: call #{position + 1} "
                f"(it has {len(answers)}). Last message: {str(messages[-1].content)[:200]!r}"
            )
            raise ScriptExhausted(msg)
        self._positions[key] = position + 1
        answer = answers[position]
        if callable(answer) and not isinstance(answer, AIMessage):
            answer = answer(call)
        return self._to_message(answer, call)

    def _to_message(self, answer: Any, call: RecordedCall) -> AIMessage:
        if isinstance(answer, AIMessage):
            message = answer.model_copy()
        elif isinstance(answer, str):
            message = AIMessage(content=answer)
        elif isinstance(answer, Mapping) and "tool" in answer:
            message = AIMessage(
                content="",
                tool_calls=[
                    {
                        "name": wire_name(str(answer["tool"])),
                        "args": dict(answer.get("args", {})),
                        "id": f"call_{next(self._ids)}",
                        "type": "tool_call",
                    }
                ],
            )
        elif isinstance(answer, Mapping) and "text" in answer:
            message = AIMessage(content=str(answer["text"]))
        else:
            msg = f"cannot turn scripted answer {answer!r} into a message"
            raise TypeError(msg)
        # Rough token counts (4 characters a token) so that usage accounting has real numbers.
        prompt_tokens = max(1, len(call.prompt) // 4)
        output_tokens = max(1, len(str(message.content) + json.dumps(message.tool_calls)) // 4)
        message.usage_metadata = {
            "input_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
        }
        return message

    @staticmethod
    def _role(
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> str | None:
        if run_manager is None:
            return None
        for metadata in (run_manager.metadata, run_manager.inheritable_metadata):
            if ROLE_METADATA_KEY in metadata:
                return str(metadata[ROLE_METADATA_KEY])
        return None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        message = self._next(self._role(run_manager), messages, kwargs.get("tools", []))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        message = self._next(self._role(run_manager), messages, kwargs.get("tools", []))
        return ChatResult(generations=[ChatGeneration(message=message)])


def _by_rules(role: str, rules: Sequence[Mapping[str, Any]]) -> Callable[[RecordedCall], Any]:
    """The answer function of a role's rules (see `ScriptedChatModel.from_file`)."""

    def answer(call: RecordedCall) -> Any:
        for rule in rules:
            needle = rule.get("if_prompt_contains")
            if needle is None or str(needle) in call.prompt:
                return rule["then"]
        msg = f"no rule of role {role!r} matches its call: {call.prompt[-200:]!r}"
        raise ScriptExhausted(msg)

    return answer
