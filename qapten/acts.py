"""The acts a role chooses from at each step, offered to the model as tools with strict schemas.

A role's menu: ``delegate`` (only when it has reports, only to them), each of its tools,
``ask_human`` and ``deliver``. The model must call exactly one; the engine checks the call against
the menu and the schemas, and tells the model what was wrong when it is not.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qapten.errors import field_problems
from qapten.policy import ActKind
from qapten.tools import Tool

DELEGATE = "delegate"
DELIVER = "deliver"
ASK_HUMAN = "ask_human"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Assignment(_Strict):
    to: str = Field(description="the name of one of your direct reports")
    brief: str = Field(min_length=1, description="what that report must do, self-contained")


class DelegateArgs(_Strict):
    """Split your task among your direct reports; they work in parallel and report back."""

    tasks: list[Assignment] = Field(min_length=1)


class DeliverArgs(_Strict):
    """Hand in the result of your task: the finished work, complete and ready to use."""

    result: str = Field(min_length=1)


class AskHumanArgs(_Strict):
    """Ask the human orchestrator a question only they can answer, and wait for the answer."""

    question: str = Field(min_length=1)


@dataclass(frozen=True)
class ActSpec:
    """One entry of a role's menu."""

    name: str
    """The act's own name: ``delegate``, ``deliver``, ``ask_human`` or the tool's name."""
    wire_name: str
    """The name the model sees (function names allow only letters, digits, ``_`` and ``-``)."""
    kind: ActKind
    description: str
    args_model: type[BaseModel]
    tool: Tool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    """The JSON Schema the model is shown (default: the arguments model's own)."""

    def __post_init__(self) -> None:
        if not self.parameters:
            object.__setattr__(self, "parameters", self.args_model.model_json_schema())

    def as_openai_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.wire_name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ChosenAct:
    """A valid choice: which act, with arguments already validated."""

    spec: ActSpec
    args: dict[str, Any]


class InvalidChoice(ValueError):
    """The model's answer is not exactly one valid act; the message is shown to the model."""


def wire_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def build_menu(reports: Sequence[str], tools: Sequence[Tool]) -> tuple[ActSpec, ...]:
    """The acts open to a role with these direct reports and tools, in a stable order."""
    menu: list[ActSpec] = []
    if reports:
        names = ", ".join(reports)
        # The schema names the reports, so a constrained decoder can only write valid ones.
        parameters = DelegateArgs.model_json_schema()
        parameters["$defs"]["Assignment"]["properties"]["to"]["enum"] = list(reports)
        menu.append(
            ActSpec(
                DELEGATE,
                DELEGATE,
                ActKind.PLAN,
                f"{DelegateArgs.__doc__} Your direct reports: {names}.",
                DelegateArgs,
                parameters=parameters,
            )
        )
    for tool in tools:
        menu.append(
            ActSpec(
                tool.name,
                wire_name(tool.name),
                ActKind.ACTION,
                tool.description,
                tool.args_model,
                tool,
            )
        )
    menu.append(
        ActSpec(ASK_HUMAN, ASK_HUMAN, ActKind.QUESTION, AskHumanArgs.__doc__ or "", AskHumanArgs)
    )
    menu.append(
        ActSpec(DELIVER, DELIVER, ActKind.DELIVERABLE, DeliverArgs.__doc__ or "", DeliverArgs)
    )
    return tuple(menu)


def validate_args(spec: ActSpec, args: Mapping[str, Any], reports: Sequence[str]) -> dict[str, Any]:
    """Check arguments against the act's schema and the engine's own rules.

    Raises `InvalidChoice` with a message that names the field and the valid choices. The same
    check serves the model's proposal and a human's edit, so both are held to one standard.
    """
    try:
        clean = spec.args_model.model_validate(dict(args)).model_dump(mode="json")
    except ValidationError as exc:
        msg = (
            f"invalid arguments for {spec.name}: {field_problems(exc.errors(), whole='arguments')}"
        )
        raise InvalidChoice(msg) from exc
    if spec.name == DELEGATE:
        for index, assignment in enumerate(clean["tasks"]):
            if assignment["to"] not in reports:
                msg = (
                    f"tasks.{index}.to: {assignment['to']!r} is not one of your direct reports; "
                    f"you may delegate only to: {', '.join(reports)}"
                )
                raise InvalidChoice(msg)
    return clean


def parse_choice(message: AIMessage, menu: Sequence[ActSpec], reports: Sequence[str]) -> ChosenAct:
    """Turn the model's answer into a `ChosenAct`, or raise `InvalidChoice` saying what is wrong."""
    by_wire = {spec.wire_name: spec for spec in menu}
    options = ", ".join(by_wire)
    calls = message.tool_calls
    if not calls and message.invalid_tool_calls:
        broken = message.invalid_tool_calls[0]
        msg = (
            f"the arguments of your call of {broken.get('name')!r} are not valid JSON "
            f"({broken.get('error') or 'cut off or malformed'}); call exactly one of: {options}"
        )
        raise InvalidChoice(msg)
    if not calls:
        msg = f"you answered with text; call exactly one of these tools: {options}"
        raise InvalidChoice(msg)
    if len(calls) > 1:
        names = ", ".join(call["name"] for call in calls)
        msg = f"you called {len(calls)} tools ({names}); call exactly one of: {options}"
        raise InvalidChoice(msg)
    call = calls[0]
    spec = by_wire.get(call["name"])
    if spec is None:
        msg = f"{call['name']!r} is not one of your acts; call exactly one of: {options}"
        raise InvalidChoice(msg)
    return ChosenAct(spec, validate_args(spec, call["args"], reports))


SINGLE_ACT_TOOL = "choose_act"


def single_act_tool(menu: Sequence[ActSpec], *, max_text: int | None = None) -> dict[str, Any]:
    """The whole menu as ONE function whose argument is ``{"act": NAME, "args": {...}}``.

    Small models cannot choose among several tools on their own (they answer in prose), and
    llama.cpp can force only a named function; forcing this one, with a schema that unites every
    act, makes any answer a valid act. `unwrap_single_act` turns the call back into the act's own.
    `max_text` caps every free text field, so that a constrained decoder ends the JSON before the
    model's token limit cuts it off.
    """
    variants: list[dict[str, Any]] = []
    definitions: dict[str, Any] = {}
    for spec in menu:
        schema = copy.deepcopy(spec.parameters)
        definitions.update(schema.pop("$defs", {}))
        schema.pop("title", None)
        variants.append(
            {
                "type": "object",
                "description": spec.description,
                "properties": {"act": {"const": spec.wire_name}, "args": schema},
                "required": ["act", "args"],
                "additionalProperties": False,
            }
        )
    parameters: dict[str, Any] = {"type": "object", "anyOf": variants}
    if definitions:
        parameters["$defs"] = definitions
    if max_text is not None:
        _cap_text(parameters, max_text)
    acts = ", ".join(spec.wire_name for spec in menu)
    return {
        "type": "function",
        "function": {
            "name": SINGLE_ACT_TOOL,
            "description": f"Choose your next act: one of {acts}, with its arguments.",
            "parameters": parameters,
        },
    }


def _cap_text(schema: Any, limit: int) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "enum" not in schema:
            schema["maxLength"] = min(schema.get("maxLength", limit), limit)
        for value in schema.values():
            _cap_text(value, limit)
    elif isinstance(schema, list):
        for item in schema:
            _cap_text(item, limit)


def unwrap_single_act(message: AIMessage) -> AIMessage:
    """Turn a call of `single_act_tool` into a call of the act it names (others pass unchanged)."""
    calls = []
    for call in message.tool_calls:
        if call["name"] == SINGLE_ACT_TOOL and isinstance(call["args"].get("act"), str):
            args = call["args"].get("args")
            call = {
                **call,
                "name": call["args"]["act"],
                "args": args if isinstance(args, dict) else {},
            }
        calls.append(call)
    return message.model_copy(update={"tool_calls": calls})


def raw_output(message: AIMessage) -> str:
    """What the model said, as text, for the record when its answer could not be used."""
    if message.tool_calls:
        return json.dumps([{"name": c["name"], "args": c["args"]} for c in message.tool_calls])
    invalid = getattr(message, "invalid_tool_calls", None)
    if invalid:
        return json.dumps([dict(c) for c in invalid], default=str)
    return str(message.content)


def title_for(spec: ActSpec, args: Mapping[str, Any]) -> str:
    """A one-line summary for the inbox."""
    if spec.name == DELEGATE:
        return "Delegate to " + ", ".join(t["to"] for t in args["tasks"])
    if spec.name == DELIVER:
        return "Deliver: " + _first_line(args["result"])
    if spec.name == ASK_HUMAN:
        return "Question: " + _first_line(args["question"])
    shown = ", ".join(f"{k}={_first_line(str(v), 30)!r}" for k, v in args.items())
    return f"{spec.name}({shown})"


def _first_line(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
