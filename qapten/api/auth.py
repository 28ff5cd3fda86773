"""Who is calling, and what they may do. The decider's identity comes only from the token.

Who may decide a proposal: admins, and approvers for its role (all approvers, or those whose
token lists the role). Once a deadline escalated it (``escalated_to``), the role is the one it
went up to; escalated to the admins, only admins. An act with a quorum is decided only by its
named approvers, by token name, on top of that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qapten.api.settings import Scope, TokenSpec, token_digest
from qapten.proposals import ADMINS, Proposal


@dataclass(frozen=True)
class Principal:
    name: str
    scope: Scope
    roles: frozenset[str] | None = None

    @property
    def can_write(self) -> bool:
        """Start and cancel runs: admins, and approvers not limited to some roles."""
        return self.scope == "admin" or (self.scope == "approver" and self.roles is None)

    def can_decide(self, role: str) -> bool:
        if self.scope == "admin":
            return True
        return self.scope == "approver" and (self.roles is None or role in self.roles)

    def refusal(self, proposal: Proposal) -> str | None:
        """Why this caller may not decide `proposal`, or None when they may."""
        me = f"{self.name} ({self.scope})"
        if proposal.escalated_to == ADMINS and self.scope != "admin":
            return f"{me} may not decide proposal {proposal.id}: it was escalated to the admins"
        role = proposal.escalated_to or proposal.role
        if not self.can_decide(role):
            return f"{me} may not decide {role} proposals"
        quorum = proposal.quorum
        if quorum is not None and self.name not in quorum.approvers:
            names = ", ".join(quorum.approvers)
            return f"{me} is not an approver of proposal {proposal.id} (approvers: {names})"
        return None


class TokenBook:
    """Bearer tokens by digest: the clear token is never kept."""

    def __init__(self, tokens: Iterable[TokenSpec]) -> None:
        self._by_digest = {
            spec.sha256: Principal(
                spec.name, spec.scope, None if spec.roles is None else frozenset(spec.roles)
            )
            for spec in tokens
        }

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal(self, token: str) -> Principal | None:
        return self._by_digest.get(token_digest(token))

    def by_name(self, name: str) -> Principal | None:
        """The holder of the token named `name`: a signed link acts with that token's rights,
        as they are when the link is used (a token removed since then decides nothing)."""
        return next((p for p in self._by_digest.values() if p.name == name), None)

    def names(self) -> list[str]:
        """The tokens' names, sorted: the identities a link can be made for."""
        return sorted({p.name for p in self._by_digest.values()})
