"""Tools from Model Context Protocol (MCP) servers: how the org chart names them.

A chart declares its servers under ``mcp_servers``: a local program that speaks MCP on its stdin
and stdout (``command``), or a server reached over streamable HTTP (``url``). A role lists a
server's tool as ``SERVER.TOOL``::

    mcp_servers:
      notes:                                    # a local program, over stdio
        command: python
        args: [servers/notes.py]                # runs in the chart's folder (see cwd)
        env: {NOTES_FILE: notes.txt, NOTES_TOKEN: "${NOTES_TOKEN}"}
      search:                                   # a remote server, over streamable HTTP
        url: https://mcp.example.com/mcp
        headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
        timeout: 120                            # seconds to start, and for one call
    roles:
      cto:
        tools: [notes.add, notes.count, search.web]
        autonomy: {action: {notes.count: auto}} # the others: approve

A stdio server runs in the chart's folder, or in ``cwd`` (relative to the chart), so relative
paths in ``args`` are relative to the chart. It sees only a few variables of Qapten's environment
(PATH, HOME...: the MCP SDK's safe default) and those of ``env``. ``${NAME}`` in ``args``, ``env``,
``url`` and ``headers`` is read from Qapten's environment when the server starts; a value under a
secret-looking name (a token, a key, a password, Authorization) must be given that way: secrets
stay out of the chart.

The servers start when the swarm opens and stop when it closes. A server's tools become
Qapten `Tool`s whose arguments are checked against the server's own JSON Schema, so an MCP call is
a proposal like any other: gated by the role's autonomy, run once through the journal. After a
crash, a call is run again only if the server marks the tool ``idempotentHint`` or
``readOnlyHint``. A tool's error (``isError``) is a failed call that the role is told about; a
server that stops answering is restarted at its next call. A server that cannot start, or that
lacks a tool a role lists, keeps the swarm from opening with a `ConfigurationError` naming it.

Running the servers is `qapten.mcp_client`'s part. Needs the ``mcp`` extra:
``pip install 'qapten[mcp]'`` (not to validate a chart).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from qapten.tools import BUILTIN_TOOL_NAMES
from qapten.yaml_source import located_error

SERVER_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
RESERVED_SERVER_NAMES = frozenset(name.partition(".")[0] for name in BUILTIN_TOOL_NAMES)
"""The built-in tools' namespaces: a server called so would make their names ambiguous."""
_URL = re.compile(r"^https?://\S+$")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``${NAME}``: a value read from the environment when a server starts."""
_SECRET_NAME = re.compile(
    r"(^|[_-])(api[_-]?key|key|token|secret|password|authorization|cookie)$", re.IGNORECASE
)
_ONLY_FOR = {"args": "command", "env": "command", "cwd": "command", "headers": "url"}


def _check_server_name(name: str) -> str:
    if not re.fullmatch(SERVER_NAME_PATTERN, name):
        msg = (
            f"bad MCP server name {name!r}: use lowercase letters, digits and '_', "
            "starting with a letter (like 'files')"
        )
        raise located_error(msg)
    if name in RESERVED_SERVER_NAMES:
        msg = f"{name!r} is the namespace of the built-in tools: call the server something else"
        raise located_error(msg)
    return name


ServerName = Annotated[
    str,
    AfterValidator(_check_server_name),
    Field(json_schema_extra={"pattern": SERVER_NAME_PATTERN}),
]


class McpServer(BaseModel):
    """An MCP server whose tools roles may call: a program over stdio, or an HTTP endpoint."""

    # hide_input_in_errors: env and headers may hold secrets; errors must not echo them.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
        json_schema_extra={"oneOf": [{"required": ["command"]}, {"required": ["url"]}]},
    )

    command: str | None = Field(None, min_length=1)
    """The program to run; it speaks MCP on its stdin and stdout."""
    args: tuple[str, ...] = ()
    """The program's arguments (stdio servers)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the program, besides PATH, HOME and a few others."""
    cwd: Path | None = None
    """The program's working directory, relative to the chart's folder. Default: that folder."""
    url: str | None = Field(None, json_schema_extra={"pattern": _URL.pattern})
    """The server's streamable HTTP endpoint, e.g. https://mcp.example.com/mcp."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers sent with every request (HTTP servers)."""
    timeout: float = Field(60, gt=0)
    """Seconds to wait for the server to start, and for one tool call."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_secrets(cls, data: Any) -> Any:
        for field in ("env", "headers"):
            values = data.get(field) if isinstance(data, Mapping) else None
            for key, value in values.items() if isinstance(values, Mapping) else ():
                if (
                    isinstance(key, str)
                    and isinstance(value, str)
                    and _SECRET_NAME.search(key)
                    and not ENV_REFERENCE.search(value)
                ):
                    shown = key if field == "env" else "NAME"
                    msg = (
                        f'this would put a secret in the chart: write "${{{shown}}}" to read it '
                        "from the environment when the server starts"
                    )
                    raise located_error(msg, at=(field, key))
        return data

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is not None and not _URL.match(url):
            msg = "give the server's http:// or https:// URL, like https://mcp.example.com/mcp"
            raise located_error(msg)
        return url

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if self.command is not None and self.url is not None:
            msg = "give command (a program over stdio) or url (an HTTP server), not both"
            raise located_error(msg, at=("url",), at_key=True)
        if self.command is None and self.url is None:
            msg = "give command (a program speaking MCP over stdio) or url (an HTTP server)"
            raise located_error(msg)
        for key, needs in _ONLY_FOR.items():
            if key in self.model_fields_set and getattr(self, needs) is None:
                kind = "a stdio server (command)" if needs == "command" else "an HTTP server (url)"
                raise located_error(f"{key} is for {kind} only", at=(key,), at_key=True)
        return self

    def in_folder(self, folder: Path) -> McpServer:
        """This server with its working directory resolved against the chart's `folder`."""
        if self.command is None:
            return self
        return self.model_copy(update={"cwd": folder / (self.cwd or ".")})


def server_of(tool: str, servers: Collection[str]) -> str | None:
    """The server among `servers` that the tool name ``SERVER.TOOL`` belongs to, if any."""
    server, dot, name = tool.partition(".")
    return server if dot and name and ":" not in tool and server in servers else None


def unknown_server(tool: str, servers: Collection[str]) -> str | None:
    """Why `tool` is not a tool of a declared server, when it looks like one (``x.y``)."""
    prefix, dot, name = tool.partition(".")
    if not servers or not dot or not name or ":" in tool or prefix in RESERVED_SERVER_NAMES:
        return None
    declared = ", ".join(sorted(servers))
    return f"no MCP server {prefix!r} for tool {tool!r}; servers under mcp_servers: {declared}"
