"""Qapten's exceptions, one tree.

    QaptenError                      base of everything Qapten raises on purpose
    ├── OrgChartError                the org chart is wrong (a developer's mistake: fix the YAML)
    ├── ConfigurationError           the swarm was set up wrong (model, API key, tool)
    ├── ProposalError                something about one proposal
    │   ├── ProposalNotFound         no proposal has that id
    │   ├── ProposalAlreadyDecided   someone decided first; this decision changed nothing
    │   └── InvalidDecision          the decision does not fit the proposal (kind, payload schema)
    ├── RunError                     something about one run
    │   ├── RunNotFound              no run has that id
    │   ├── RunFailed                `Swarm.wait` on a run that ended failed or cancelled
    │   └── RunNotRetryable          `Swarm.retry` on a run that is not failed
    ├── WorkspaceError               a tool tried to reach outside its run's workspace
    └── ScriptExhausted              the scripted test model was called more often than scripted

Catch `OrgChartError` around loading a chart, `ProposalAlreadyDecided` around `decide` when several
humans or channels may answer the same proposal, `RunFailed` around `wait`, and `RunNotRetryable`
around `retry` when someone else may have retried the run first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class QaptenError(Exception):
    """Base class of every error Qapten raises on purpose."""


@dataclass(frozen=True)
class ChartProblem:
    """One mistake in an org chart, with the place it was found."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class OrgChartError(QaptenError):
    """The org chart is invalid. `problems` lists every mistake found, each with file:line:col."""

    def __init__(self, problems: list[ChartProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigurationError(QaptenError):
    """The swarm was configured wrong: an unknown model spec, a missing API key, a bad tool."""


class ProposalError(QaptenError):
    """Base class for errors about one proposal."""


class ProposalNotFound(ProposalError):
    """No proposal has the given id."""


class ProposalAlreadyDecided(ProposalError):
    """The proposal was decided already; this decision changed nothing."""

    def __init__(self, proposal_id: str, status: str, decided_by: str | None) -> None:
        self.proposal_id = proposal_id
        self.status = status
        self.decided_by = decided_by
        by = f" by {decided_by}" if decided_by else ""
        super().__init__(f"proposal {proposal_id} is already {status}{by}")


class InvalidDecision(ProposalError):
    """The decision does not fit the proposal: wrong for its kind, or a bad edited payload."""


class RunError(QaptenError):
    """Base class for errors about one run."""


class RunNotFound(RunError):
    """No run has the given id."""


class RunFailed(RunError):
    """The run ended without a result (failed or cancelled); `status` and `reason` say why."""

    def __init__(self, run_id: str, status: str, reason: str | None) -> None:
        self.run_id = run_id
        self.status = status
        self.reason = reason
        super().__init__(f"run {run_id} {status}: {reason or 'no reason recorded'}")


class RunNotRetryable(RunError):
    """Only a failed run can be retried; this one is `status` (or someone retried it first)."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id} is {status}: only a failed run can be retried")


class WorkspaceError(QaptenError):
    """A path escapes the run's workspace (`..`, an absolute path, or a symlink pointing out)."""


class ScriptExhausted(QaptenError):
    """The scripted model was called once more than its script has responses."""


def field_problems(errors: Iterable[Mapping[str, Any]], *, whole: str = "value") -> str:
    """Validation errors (pydantic's ``exc.errors()``) as one line that names each field:
    ``tasks.0.to: Input should be 'cto'; brief: Field required``. `whole` names the input itself
    when an error is about all of it."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or whole}: {error['msg']}"
        for error in errors
    )
