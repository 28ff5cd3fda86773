"""The org chart: YAML → frozen pydantic models, whole-chart checks, and a JSON Schema for editors.

Load a chart with `OrgChart.from_file`, `from_text` or `from_dict`. Every mistake found is
collected and raised together as one `OrgChartError`, each placed at ``file:line:column`` of the
YAML node at fault. Field validation is pydantic's; the reporting lines (unknown managers, roots,
cycles) are checked over the whole chart here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qapten.errors import ChartProblem, ConfigurationError, OrgChartError
from qapten.mcp import McpServer, ServerName, server_of, unknown_server
from qapten.models import ModelField, ModelRef
from qapten.policy import Autonomy, Deadline, Quorum, check_rules
from qapten.tools import BUILTIN_TOOL_NAMES, resolve_tool_ref
from qapten.yaml_source import (
    Issue,
    KeyPath,
    describe,
    issue_of,
    located_error,
    parse_yaml,
    printable,
    read_yaml_file,
    shown_name,
)

ROLE_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


@dataclass(frozen=True)
class _Loading:
    """Validation context while loading a chart: where prompts live and which tools exist."""

    base_dir: Path  # absolute
    shown_dir: Path  # the chart's folder as the user named it, for messages
    extra_tools: frozenset[str]
    mcp_servers: frozenset[str] = frozenset()


def _check_tool(name: str, info: ValidationInfo) -> str:
    loading = info.context
    if not isinstance(loading, _Loading) or name in BUILTIN_TOOL_NAMES:
        return name
    if name in loading.extra_tools:
        return name
    if ":" in name:
        try:
            resolve_tool_ref(name)
        except ConfigurationError as exc:
            raise located_error(str(exc)) from exc
        return name
    if server_of(name, loading.mcp_servers):
        return name  # whether the server offers it is known once it runs (Swarm opening)
    known = ", ".join(sorted({*BUILTIN_TOOL_NAMES, *loading.extra_tools}))
    msg = f"unknown tool {shown_name(name)}; known tools: {known} (or 'package.module:function', "
    msg += "or SERVER.TOOL for a server under mcp_servers)"
    raise located_error(unknown_server(name, loading.mcp_servers) or msg)


def _check_role_name(name: str) -> str:
    if not re.fullmatch(ROLE_NAME_PATTERN, name):
        msg = (
            f"bad role name {shown_name(name)}: use lowercase letters, digits and '_', "
            "starting with a letter (like 'cto' or 'support_lead')"
        )
        raise located_error(msg)
    return name


_ToolName = Annotated[
    str, Field(min_length=1, examples=list(BUILTIN_TOOL_NAMES)), AfterValidator(_check_tool)
]
_RoleName = Annotated[
    str, AfterValidator(_check_role_name), Field(json_schema_extra={"pattern": ROLE_NAME_PATTERN})
]


def _role_as_written(schema: dict[str, Any]) -> None:
    # In YAML the name is the key under `roles:`, and title and prompt default from it.
    schema["properties"].pop("name", None)
    schema.pop("required", None)


class Role(BaseModel):
    """One role of the org chart; it becomes one node of the graph."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=_role_as_written,
    )

    name: str
    """The role's key under `roles:`."""
    title: str = Field(min_length=1)
    """The role's title, for people and the other agents. Default: the name, capitalised."""
    prompt: Path
    """The role's system prompt, a Markdown file relative to the chart's folder. Default: NAME.md"""
    reports_to: str | None = None
    """The role's manager; null for the one role that reports to the human orchestrator."""
    tools: tuple[_ToolName, ...] = ()
    """Tools the role may call: built-in ones (workspace.*), 'package.module:function', or
    SERVER.TOOL for a tool of a server under mcp_servers."""
    model: ModelField = None
    """The chat model of this role, when it differs from the chart's."""
    autonomy: Autonomy = Field(default_factory=Autonomy)
    """Who decides the role's plans, actions and deliverables: auto, approve or human."""
    deadlines: dict[str, Deadline] = Field(default_factory=dict)
    """How long its proposals wait for a human, by kind of act, tool name or `default`."""
    quorum: dict[str, Quorum] = Field(default_factory=dict)
    """Acts that need M of N named approvers, by kind of act or tool name."""
    max_revisions: int = Field(3, ge=0, strict=True)
    """How many times a human may send one of the role's proposals back for revision."""
    max_steps: int = Field(20, ge=1, strict=True)
    """Model calls allowed for one task of this role."""
    budget: int | None = Field(None, ge=1, strict=True)
    """Tokens this role may spend in one run, all its tasks together; at the limit a human
    decides whether it goes on (a budget proposal). Default: no limit."""

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("name"), str):
            name = data["name"]
            return {"title": name.replace("_", " ").title(), "prompt": f"{name}.md", **data}
        return data

    @field_validator("prompt")
    @classmethod
    def _resolve_prompt(cls, prompt: Path, info: ValidationInfo) -> Path:
        loading = info.context
        if not isinstance(loading, _Loading):
            return prompt
        shown = shown_name(str(prompt))
        if prompt.is_absolute() or ".." in prompt.parts:
            msg = (
                f"prompt {shown} is outside the chart's folder: "
                "give a path relative to the chart, without '..'"
            )
            raise located_error(msg)
        path = loading.base_dir / prompt
        try:
            # A symlink (the file, or a folder on the way) may still lead out of the folder.
            target = path.resolve()
            found = path.is_file()
        except (OSError, RuntimeError, ValueError) as exc:  # too long, a link loop, a NUL
            reason = getattr(exc, "strerror", None) or exc
            raise located_error(f"prompt file {shown} cannot be read: {reason}") from exc
        if not target.is_relative_to(loading.base_dir):
            msg = f"prompt {shown} is a link to {printable(str(target))}, outside the chart's "
            raise located_error(msg + "folder: copy the file into the folder")
        if not found:
            looked = printable(str(loading.shown_dir / prompt))
            raise located_error(f"prompt file {shown} not found (looked for {looked})")
        return path

    @model_validator(mode="after")
    def _check_tools(self) -> Self:
        for index, tool in enumerate(self.tools):
            if tool in self.tools[:index]:
                raise located_error(f"tool {tool!r} is listed twice", at=("tools", index))
        if isinstance(self.autonomy.action, dict):
            for tool in self.autonomy.action:
                if tool not in self.tools:
                    listed = ", ".join(self.tools) or "none"
                    msg = f"{tool!r} is not one of the tools of role {self.name!r}: {listed}"
                    raise located_error(msg, at=("autonomy", "action", tool), at_key=True)
        check_rules(self.name, self.tools, self.autonomy, self.deadlines, self.quorum)
        return self


class OrgChart(BaseModel):
    """A validated org chart: named roles, each reporting to another role or to the human."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, title="Qapten org chart"
    )

    name: str = Field(min_length=1)
    """The company's name."""
    model: ModelField = None
    """The default chat model of every role: local, openai:NAME, scripted:FILE, or a mapping."""
    max_steps: int = Field(200, ge=1, strict=True)
    """Model calls allowed for one whole run."""
    budget: int | None = Field(None, ge=1, strict=True)
    """Tokens one run may spend, all roles together; at the limit a human decides whether it
    goes on (a budget proposal). Default: no limit."""
    roles: dict[_RoleName, Role] = Field(
        min_length=1, json_schema_extra={"additionalProperties": False}
    )
    """The roles, by name; exactly one of them reports to the human (reports_to: null)."""
    mcp_servers: dict[ServerName, McpServer] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    """MCP servers whose tools roles may call as SERVER.TOOL: a command (stdio) or a url."""
    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        """The chart file (absolute), when the chart was loaded from a file."""
        return self._source

    @property
    def root(self) -> Role:
        """The one role that reports to the human orchestrator."""
        return next(role for role in self.roles.values() if role.reports_to is None)

    def role(self, name: str) -> Role:
        """The role called `name`; `KeyError` naming the roles when there is none."""
        if name not in self.roles:
            msg = f"no role {name!r}; roles: {', '.join(self.roles)}"
            raise KeyError(msg)
        return self.roles[name]

    def reports(self, name: str) -> tuple[Role, ...]:
        """The direct reports of `name`, in the chart's order."""
        self.role(name)
        return tuple(role for role in self.roles.values() if role.reports_to == name)

    def manager(self, name: str) -> Role | None:
        """The manager of `name`; None for the root, which reports to the human."""
        manager = self.role(name).reports_to
        return None if manager is None else self.roles[manager]

    def prompt_text(self, name: str) -> str:
        """The content of the role's prompt file."""
        return self.role(name).prompt.read_text(encoding="utf-8")

    @model_validator(mode="before")
    @classmethod
    def _name_roles(cls, data: Any) -> Any:
        # A role's name is its key under `roles:`; the Role model keeps it too.
        if not isinstance(data, Mapping) or not isinstance(data.get("roles"), Mapping):
            return data
        roles: dict[Any, Any] = {}
        for key, role in data["roles"].items():
            given = (
                role.get("name", key) if isinstance(role, Mapping) else getattr(role, "name", key)
            )
            if given != key:
                msg = f"a role's name is its key under roles ({key!r}): remove name {given!r}"
                raise located_error(msg, at=("roles", key, "name"))
            roles[key] = {**role, "name": key} if isinstance(role, Mapping) else role
        return {**data, "roles": roles}

    @field_validator("mcp_servers")
    @classmethod
    def _servers_in_folder(
        cls, servers: dict[str, McpServer], info: ValidationInfo
    ) -> dict[str, McpServer]:
        if not isinstance(info.context, _Loading):
            return servers
        return {name: server.in_folder(info.context.base_dir) for name, server in servers.items()}

    @model_validator(mode="after")
    def _check_reporting_lines(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, _Loading):
            return self  # the loader reports every problem of the lines, each with its position
        lines = {name: {"reports_to": role.reports_to} for name, role in self.roles.items()}
        issues = _reporting_issues(lines)
        if issues:
            raise located_error(issues[0].message, at=issues[0].path)
        return self

    @classmethod
    def from_file(cls, path: str | Path, *, extra_tools: Collection[str] = ()) -> OrgChart:
        """Load and validate the chart in `path` (`OSError` if it cannot be read)."""
        path = Path(path)
        text = read_yaml_file(path)  # bounded: a folder, a huge file, non-UTF-8 are refused
        chart = cls.from_text(text, source=path, extra_tools=extra_tools)
        chart._source = path.resolve()
        return chart

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        source: str | Path = "<string>",
        base_dir: Path | None = None,
        extra_tools: Collection[str] = (),
    ) -> OrgChart:
        """Validate a chart given as YAML text. `source` is the file name shown in problems;
        prompts are found in `base_dir`, by default the folder of `source`."""
        doc = parse_yaml(text, file=str(source))
        folder = Path(base_dir) if base_dir is not None else Path(source).parent
        loading = _Loading(folder.resolve(), folder, frozenset(extra_tools))

        def place(issue: Issue) -> ChartProblem:
            return doc.problem(issue.path, issue.message, at_key=issue.at_key)

        return cls._load(doc.data, loading, place, problems=doc.problems)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: Path, extra_tools: Collection[str] = ()
    ) -> OrgChart:
        """Validate a chart given as data shaped like the YAML; prompts are found in `base_dir`.
        Problems have no position (line and column 0) but name the place in the data."""
        loading = _Loading(Path(base_dir).resolve(), Path(base_dir), frozenset(extra_tools))
        return cls._load(data, loading, lambda issue: ChartProblem("<dict>", 0, 0, issue.message))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON Schema of the YAML as a user writes it, for editors to check and complete."""
        schema = cls.model_json_schema(mode="validation")
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}

    @classmethod
    def _load(
        cls,
        data: Any,
        loading: _Loading,
        place: Callable[[Issue], ChartProblem],
        problems: Collection[ChartProblem] = (),
    ) -> OrgChart:
        if not isinstance(data, Mapping):
            what = "empty" if data is None else f"a {type(data).__name__}"
            keys = ", ".join(_written_keys(cls))
            msg = f"the chart must be a mapping with the keys {keys}; this one is {what}"
            raise OrgChartError([*problems, place(Issue((), msg))])
        servers = data.get("mcp_servers")
        if isinstance(servers, Mapping):  # roles' tools SERVER.TOOL are checked against these
            loading = replace(loading, mcp_servers=frozenset(map(str, servers)))
        roles = data.get("roles")
        issues = _reporting_issues(roles) if isinstance(roles, Mapping) else []
        try:
            chart = cls.model_validate(data, context=loading)
        except ValidationError as exc:
            issues += [issue_of(error, data, _keys_at) for error in exc.errors()]
        # A value YAML could not read is None in the data: its validation error would repeat it.
        taken = {(problem.line, problem.column) for problem in problems}
        found = [*problems, *(p for p in map(place, issues) if (p.line, p.column) not in taken)]
        if found:
            raise OrgChartError(sorted(found, key=lambda problem: (problem.line, problem.column)))
        return chart


def _reporting_issues(roles: Mapping[str, Any]) -> list[Issue]:
    """Unknown managers, self-reports, missing or extra roots, and cycles, in role data.

    Roles and `reports_to` values of the wrong type are skipped: validation reports those.
    """
    parents: dict[str, str | None] = {}  # role -> manager (None: the human), where known
    for name, role in roles.items():
        if isinstance(role, Mapping) and isinstance(role.get("reports_to"), str | None):
            parents[name] = role.get("reports_to")

    def at(name: str, message: str) -> Issue:
        text = f"{describe(('roles', name))}{message}"
        if "reports_to" in roles[name]:
            return Issue(("roles", name, "reports_to"), text)
        return Issue(("roles", name), text, at_key=True)

    issues: list[Issue] = []
    for name, manager in parents.items():
        if manager == name:
            issues.append(at(name, f"{name!r} reports to itself; name its manager, or null"))
        elif manager is not None and manager not in roles:
            known = ", ".join(f"{role!a}"[1:-1] for role in roles)  # look-alikes show
            msg = f"reports_to {shown_name(manager)} is not a role; roles: {known}"
            issues.append(at(name, msg))
    roots = [name for name, manager in parents.items() if manager is None]
    for extra in roots[1:]:
        msg = f"{roots[0]!r} and {extra!r} both report to the human (reports_to: null)"
        issues.append(at(extra, f"{msg}; exactly one role may"))
    if not roots and roles and len(parents) == len(roles):
        msg = "no root: every role reports to another role; exactly one needs reports_to: null"
        issues.append(Issue((), msg))
    for cycle in _cycles(parents):
        loop = " -> ".join(cycle)
        issues.append(at(cycle[0], f"reporting cycle {loop}: every line must lead up to the root"))
    return issues


def _cycles(parents: Mapping[str, str | None]) -> list[list[str]]:
    """Each loop of managers once, from its role that comes first, back to it: [a, b, a]."""
    order = {name: index for index, name in enumerate(parents)}
    cycles: list[list[str]] = []
    done: set[str] = set()
    for start in parents:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node in parents and node not in done and node not in chain:
            chain.append(node)
            manager = parents[node]
            node = None if manager == node else manager  # self-reports are reported on their own
        if node is not None and node in chain:
            loop = chain[chain.index(node) :]
            turn = loop.index(min(loop, key=order.__getitem__))
            cycles.append([*loop[turn:], *loop[:turn], loop[turn]])
        done.update(chain)
    return cycles


@cache
def _written_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a user may write in a mapping validated by `model`: those of its JSON Schema."""
    return tuple(sorted(model.model_json_schema()["properties"]))


def _keys_at(path: KeyPath) -> tuple[str, ...]:
    """The keys a user may write in the mapping at `path` of the chart data."""
    match path:
        case ("model",) | ("roles", _, "model"):
            return _written_keys(ModelRef)
        case ("roles", _):
            return _written_keys(Role)
        case ("roles", _, "autonomy"):
            return _written_keys(Autonomy)
        case ("roles", _, "deadlines", _):
            return _written_keys(Deadline)
        case ("roles", _, "quorum", _):
            return _written_keys(Quorum)
        case ("mcp_servers", _):
            return _written_keys(McpServer)
        case _:
            return _written_keys(OrgChart)
