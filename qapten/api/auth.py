"""Who is calling, and what they may do. The decider's identity comes only from the token."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qapten.api.settings import Scope, TokenSpec, token_digest


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
