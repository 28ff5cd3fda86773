"""Tools agents can call: the built-in workspace tools, custom Python callables, and tools
whose arguments are described by a JSON Schema given as data (those of MCP servers).

A Python tool's argument schema comes from its type hints. A parameter annotated `ToolContext` is
filled in by the engine (run id, idempotency key, workspace) and is not shown to the model.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from qapten.errors import ConfigurationError
from qapten.workspace import Workspace


@dataclass(frozen=True)
class ToolContext:
    """What the engine hands a tool besides its arguments."""

    run_id: str
    call_id: str
    """Unique per approved act and stable across restarts: use it as an idempotency key."""
    workspace: Workspace


ToolFunc = Callable[..., Any] | Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A callable the agents may use, with the schema its arguments must satisfy."""

    name: str
    description: str
    args_model: type[BaseModel]
    func: ToolFunc
    context_param: str | None = None
    idempotent: bool = False
    """True when running it twice has the effect of running it once; only such tools are run
    again after a crash interrupted them."""

    def validate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Check `payload` against the argument schema; raise pydantic's ValidationError if not."""
        return self.args_model.model_validate(dict(payload)).model_dump(mode="json")

    def json_schema(self) -> dict[str, Any]:
        return self.args_model.model_json_schema()

    async def run(self, args: Mapping[str, Any], context: ToolContext) -> str:
        kwargs = dict(self.args_model.model_validate(dict(args)))
        if self.context_param:
            kwargs[self.context_param] = context
        result = self.func(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return "" if result is None else str(result)


def tool_from_callable(
    func: ToolFunc,
    *,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = False,
) -> Tool:
    """Make a `Tool` from a Python function; its type hints become the argument schema."""
    tool_name = name or func.__name__
    hints = get_type_hints(func)
    fields: dict[str, Any] = {}
    context_param = None
    for param in inspect.signature(func).parameters.values():
        annotation = hints.get(param.name, str)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default))
    model_name = _model_name(tool_name)
    args_model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    doc = description or inspect.getdoc(func) or f"Call {tool_name}."
    return Tool(
        name=tool_name,
        description=doc.strip().splitlines()[0],
        args_model=args_model,
        func=func,
        context_param=context_param,
        idempotent=idempotent,
    )


class SchemaArgs(BaseModel):
    """Arguments checked against a JSON Schema kept as data, not translated into fields.

    An MCP server describes a tool's arguments in JSON Schema. Translating that into pydantic
    fields would lose whatever pydantic cannot express the same way (``oneOf``, ``$ref``,
    formats, patterns on keys...), and the model would be shown a schema the server never wrote.
    Here the schema stays as the server gave it: `model_json_schema()` returns it unchanged, and
    validation is the ``jsonschema`` package's. The arguments are kept as given, without defaults
    filled in, because the server applies its own.
    """

    model_config = ConfigDict(extra="allow")

    json_schema_: ClassVar[dict[str, Any]] = {"type": "object"}
    validator_: ClassVar[Any] = None  # a jsonschema validator for `json_schema_`

    @model_validator(mode="before")
    @classmethod
    def _check_schema(cls, data: Any) -> Any:
        errors = sorted(cls.validator_.iter_errors(data), key=lambda e: list(map(str, e.path)))
        if errors:
            # One error per problem, each at its path, like pydantic's own.
            details = [
                InitErrorDetails(
                    type=PydanticCustomError("json_schema", "{problem}", {"problem": e.message}),
                    loc=tuple(e.absolute_path),
                    input=e.instance,
                )
                for e in errors
            ]
            raise ValidationError.from_exception_data(cls.__name__, details)
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return copy.deepcopy(cls.json_schema_)


def schema_args_model(name: str, schema: Mapping[str, Any]) -> type[BaseModel]:
    """An arguments model (a `SchemaArgs`) for the JSON Schema `schema` of the tool `name`.

    Raises `ConfigurationError` if `schema` is not a valid JSON Schema of an object.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    kept = copy.deepcopy(dict(schema))
    if kept.get("type") != "object":
        msg = f"tool {name!r}: its arguments schema must describe an object, not {kept!r}"
        raise ConfigurationError(msg)
    checker = validator_for(kept, default=Draft202012Validator)
    try:
        checker.check_schema(kept)
    except SchemaError as exc:
        msg = f"tool {name!r}: its arguments schema is not valid JSON Schema: {exc.message}"
        raise ConfigurationError(msg) from exc
    namespace = {"__module__": __name__, "json_schema_": kept, "validator_": checker(kept)}
    return type(_model_name(name), (SchemaArgs,), namespace)


def _model_name(tool_name: str) -> str:
    return "".join(part.title() for part in tool_name.replace(":", ".").split(".")) + "Args"


def resolve_tool_ref(ref: str) -> Tool:
    """Import a tool named `package.module:function` in the YAML."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        msg = f"tool reference {ref!r} must look like 'package.module:function'"
        raise ConfigurationError(msg)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"tool {ref!r}: cannot import module {module_name!r} ({exc})"
        raise ConfigurationError(msg) from exc
    func = getattr(module, attr, None)
    if isinstance(func, Tool):
        return func
    if not callable(func):
        msg = f"tool {ref!r}: module {module_name!r} has no callable {attr!r}"
        raise ConfigurationError(msg)
    return tool_from_callable(func, name=ref)


def _write_file(path: str, content: str, ctx: ToolContext) -> str:
    """Write a text file in the run's workspace (creating folders), replacing any old content."""
    ctx.workspace.write_text(path, content)
    return f"wrote {len(content)} characters to {path}"


def _read_file(path: str, ctx: ToolContext) -> str:
    """Read a text file from the run's workspace."""
    return ctx.workspace.read_text(path)


def _list_files(ctx: ToolContext) -> str:
    """List the files in the run's workspace."""
    files = ctx.workspace.list_files()
    return "\n".join(files) if files else "(the workspace is empty)"


BUILTIN_TOOLS: Mapping[str, Tool] = {
    tool.name: tool
    for tool in (
        tool_from_callable(_write_file, name="workspace.write_file", idempotent=True),
        tool_from_callable(_read_file, name="workspace.read_file", idempotent=True),
        tool_from_callable(_list_files, name="workspace.list_files", idempotent=True),
    )
}
BUILTIN_TOOL_NAMES: tuple[str, ...] = tuple(sorted(BUILTIN_TOOLS))
