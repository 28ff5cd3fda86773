"""Running the MCP servers of a swarm, and their tools as Qapten tools (see `qapten.mcp`).

Each server keeps one session from the swarm's opening to its closing, held by a task of its own,
rather than a session per call: a call that starts the stdio notes server of the tests costs about
0.5 s, a call on an open session about 4 ms (medians of 10, interleaved), and a server may keep
state between calls. A call that finds its server gone fails (its effect is unknown), and the
server restarts at its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qapten.errors import ConfigurationError
from qapten.mcp import ENV_REFERENCE, McpServer, server_of
from qapten.tools import Tool, schema_args_model

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from mcp import ClientSession

logger = logging.getLogger(__name__)

STDERR_TAIL = 1500
"""Characters of a stdio server's stderr shown when it fails."""


class McpToolError(Exception):
    """An MCP tool call failed: the tool reported an error, or its server did not answer."""


class McpServers:
    """The MCP servers of one swarm: started when it opens, stopped when it closes."""

    def __init__(self, servers: Mapping[str, McpServer]) -> None:
        self.servers = dict(servers)
        self._running: dict[str, _Server] = {}

    def uses(self, tools: Collection[str]) -> bool:
        """True when one of these tool names belongs to a server."""
        return any(server_of(tool, self.servers) for tool in tools)

    async def start(self, tools: Collection[str]) -> dict[str, Tool]:
        """Start the servers of these tool names (SERVER.TOOL); returns those tools by name.

        Raises `ConfigurationError` naming each server that failed to start, or that does not
        offer a tool asked for (with the tools it does offer); then no server is left running.
        """
        wanted: dict[str, set[str]] = {}
        for name in tools:
            server = server_of(name, self.servers)
            if server is not None:
                wanted.setdefault(server, set()).add(name.partition(".")[2])
        if not wanted:
            return {}
        _require_extra(wanted)
        new = {n: _Server(n, self.servers[n]) for n in wanted if n not in self._running}
        self._running.update(new)  # from here on, `close` stops them whatever happens
        results = await asyncio.gather(*(s.start() for s in new.values()), return_exceptions=True)
        problems = [r for r in results if isinstance(r, BaseException)]
        failed = {name for name, result in zip(new, results, strict=True) if result is not None}
        found: dict[str, Tool] = {}
        for server, names in wanted.items():
            if server in failed:
                continue
            offered = self._running[server].tools
            for name in sorted(names):
                if name in offered:
                    found[f"{server}.{name}"] = offered[name]
                    continue
                listed = ", ".join(sorted(offered)) or "none"
                msg = f"MCP server {server!r} has no tool {name!r} (in the chart: {server}.{name})"
                problems.append(ConfigurationError(f"{msg}; its tools: {listed}"))
        if problems:
            await self.close()
            unexpected = [p for p in problems if not isinstance(p, ConfigurationError)]
            if unexpected:
                raise unexpected[0]
            raise ConfigurationError("\n".join(map(str, problems)))
        return found

    async def close(self) -> None:
        running, self._running = list(self._running.values()), {}
        await asyncio.gather(*(server.stop() for server in running))


class _Server:
    """One server's session, held open by a task of its own.

    The MCP client's transports are anyio contexts, which must be left by the task that entered
    them: one task enters them, serves calls through the session, and leaves on `stop`.
    """

    def __init__(self, name: str, spec: McpServer) -> None:
        self.name = name
        self.spec = spec
        self.tools: dict[str, Tool] = {}
        self._remote: dict[str, BaseTool] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._stderr: Path | None = None
        self._lost = False
        self._restarting = asyncio.Lock()

    async def start(self) -> None:
        # Environment variables are read first: a missing one is a setup mistake, not a crash.
        connect = self._connector()
        ready: asyncio.Future[dict[str, BaseTool]] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(connect, ready), name=f"mcp {self.name}")
        try:
            self._remote = await ready
            self.tools = {name: self._tool(name, remote) for name, remote in self._remote.items()}
        except Exception as exc:
            msg = f"MCP server {self.name!r} failed to start: {self._start_failure(exc)}"
            await self.stop()
            raise ConfigurationError(msg) from exc

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._stderr is not None:
            self._stderr.unlink(missing_ok=True)
            self._stderr = None

    async def call(self, tool: str, /, **args: Any) -> str:
        from langchain_core.tools import ToolException

        if self._lost:
            await self._restart()
        remote = self._remote.get(tool)
        if remote is None:
            raise McpToolError(f"MCP server {self.name!r} no longer offers the tool {tool!r}")
        try:
            content = await remote.ainvoke(args)
        except ToolException as exc:  # the tool answered with isError: the role's news
            raise McpToolError(str(exc)) from None
        except Exception as exc:
            self._lost = True  # restart the server before its next call
            # The stderr tail is for the operator's log, not for the role's (and model's) notes.
            logger.warning("MCP server %r failed a call%s", self.name, self._stderr_tail())
            msg = (
                f"MCP server {self.name!r} gave no answer ({_reason(exc)}), so the call's "
                "effect is unknown; the server restarts at the next call"
            )
            raise McpToolError(msg) from exc
        return _as_text(content)

    async def _restart(self) -> None:
        async with self._restarting:
            if self._lost:
                await self.stop()
                await self.start()
                self._lost = False

    def _tool(self, name: str, remote: BaseTool) -> Tool:
        qualified = f"{self.name}.{name}"
        schema = remote.args_schema if isinstance(remote.args_schema, dict) else {}
        hints = remote.metadata or {}
        return Tool(
            name=qualified,
            description=(remote.description or f"Call {name} on MCP server {self.name}.").strip(),
            args_model=schema_args_model(qualified, schema),
            func=functools.partial(self.call, name),
            # A read-only tool changes nothing, so running it again is as safe as idempotence.
            idempotent=bool(hints.get("idempotentHint") or hints.get("readOnlyHint")),
        )

    async def _hold(
        self,
        connect: contextlib.AbstractAsyncContextManager[ClientSession],
        ready: asyncio.Future[dict[str, BaseTool]],
    ) -> None:
        import anyio
        from langchain_mcp_adapters.tools import load_mcp_tools

        try:
            async with connect as session:
                with anyio.fail_after(self.spec.timeout):
                    await session.initialize()
                    tools = await load_mcp_tools(
                        session, server_name=self.name, handle_tool_errors=False
                    )
                ready.set_result({tool.name: tool for tool in tools})
                await self._stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.warning("MCP server %r stopped: %s", self.name, _reason(exc))
        finally:
            if not ready.done():  # cancelled before the server was ready
                ready.cancel()

    def _connector(self) -> contextlib.AbstractAsyncContextManager[ClientSession]:
        spec, timeout = self.spec, timedelta(seconds=self.spec.timeout)
        if spec.url is not None:
            from langchain_mcp_adapters.sessions import StreamableHttpConnection, create_session

            connection: StreamableHttpConnection = {
                "transport": "streamable_http",
                "url": self._expand(spec.url, "url"),
                "headers": {k: self._expand(v, f"headers.{k}") for k, v in spec.headers.items()},
                "timeout": timeout,
                "session_kwargs": {"read_timeout_seconds": timeout},
            }
            return create_session(connection)
        args = [self._expand(arg, f"args[{i}]") for i, arg in enumerate(spec.args)]
        env = {key: self._expand(value, f"env.{key}") for key, value in spec.env.items()}
        return self._stdio(args, env, timeout)

    @contextlib.asynccontextmanager
    async def _stdio(
        self, args: list[str], env: dict[str, str], read_timeout: timedelta
    ) -> AsyncIterator[ClientSession]:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert self.spec.command is not None
        params = StdioServerParameters(
            command=self.spec.command, args=args, env=env, cwd=self.spec.cwd
        )
        # The server's stderr goes to a file, so that a failure can show how it ended.
        handle, name = tempfile.mkstemp(prefix=f"qapten-mcp-{self.name}-", suffix=".log")
        os.close(handle)
        self._stderr = Path(name)
        with self._stderr.open("w", encoding="utf-8", errors="replace") as errlog:
            try:
                async with (
                    stdio_client(params, errlog=errlog) as (read, write),
                    ClientSession(read, write, read_timeout_seconds=read_timeout) as session,
                ):
                    yield session
            except FileNotFoundError as exc:
                raise self._not_found(exc) from exc

    def _start_failure(self, exc: BaseException) -> str:
        from mcp.shared.exceptions import McpError
        from mcp.types import CONNECTION_CLOSED

        cause = _innermost(exc)
        if isinstance(cause, TimeoutError):
            reason = (
                f"no answer within {self.spec.timeout:g} s: is it an MCP server? "
                "(if it is slow to start, raise its timeout)"
            )
        elif isinstance(cause, McpError) and cause.error.code == CONNECTION_CLOSED:
            reason = "it exited, or closed the connection, before answering"
        else:
            reason = _reason(cause)
        where = f"{self.spec.url}: " if self.spec.url and "${" not in self.spec.url else ""
        return f"{where}{reason}{self._stderr_tail()}"

    def _not_found(self, exc: FileNotFoundError) -> ConfigurationError:
        cwd = self.spec.cwd
        if cwd is not None and exc.filename is not None and Path(exc.filename) == cwd:
            return ConfigurationError(f"its working directory {str(cwd)!r} does not exist")
        return ConfigurationError(f"command {self.spec.command!r} not found")

    def _expand(self, value: str, where: str) -> str:
        def variable(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                msg = (
                    f"MCP server {self.name!r}: {where} reads the environment variable "
                    f"{name}, which is not set"
                )
                raise ConfigurationError(msg)
            return os.environ[name]

        return ENV_REFERENCE.sub(variable, value)

    def _stderr_tail(self) -> str:
        if self._stderr is None or not self._stderr.exists():
            return ""
        with self._stderr.open("rb") as log:  # only the end: a long-lived server logs a lot
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - STDERR_TAIL))
            text = log.read().decode("utf-8", errors="replace").strip()
        if not text:
            return ""
        shown = text if size <= STDERR_TAIL else f"[…]{text}"
        return f"; its stderr ended with:\n{shown}"


def _require_extra(servers: Collection[str]) -> None:
    try:
        import langchain_mcp_adapters  # noqa: F401
    except ImportError as exc:
        names = ", ".join(sorted(servers))
        msg = f"the chart uses MCP servers ({names}): install them with pip install 'qapten[mcp]'"
        raise ConfigurationError(msg) from exc


def _innermost(exc: BaseException) -> BaseException:
    """The first real failure inside `exc`: anyio wraps failures in exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _reason(exc: BaseException) -> str:
    """The innermost cause of `exc`, as one line."""
    exc = _innermost(exc)
    if isinstance(exc, ConfigurationError):
        return str(exc)
    text = str(exc).strip() or "no message"
    return f"{type(exc).__name__}: {text}"


def _as_text(content: Any) -> str:
    """An MCP result (LangChain content blocks) as the text a role reads."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, Mapping):
            what = block.get("mime_type") or block.get("url") or "no description"
            parts.append(f"[{block.get('type')}: {what}]")
        else:
            parts.append(str(block))
    return "\n".join(parts)
