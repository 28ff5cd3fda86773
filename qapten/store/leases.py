"""Run leases: one writer advances a run at a time, fenced by a token that grows each claim."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from qapten.errors import RunNotFound
from qapten.store import tables as t
from qapten.store.base import StoreBase, _in_utc


class Leases(StoreBase):
    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> int | None:
        """Claim the right to advance `run_id`; returns the fencing token, or None if held."""
        now = self.clock()
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(
                        t.runs.c.lease_owner, t.runs.c.lease_token, t.runs.c.lease_expires_at
                    ).where(t.runs.c.id == run_id)
                )
            ).first()
            if row is None:
                msg = f"no run with id {run_id!r}"
                raise RunNotFound(msg)
            expires = _in_utc(row.lease_expires_at)
            if row.lease_owner not in (None, owner) and expires is not None and expires > now:
                return None
            token = int(row.lease_token) + 1
            await conn.execute(
                update(t.runs)
                .where(t.runs.c.id == run_id)
                .values(
                    lease_owner=owner,
                    lease_token=token,
                    lease_expires_at=now + timedelta(seconds=ttl),
                )
            )
        return token

    async def renew_lease(self, run_id: str, owner: str, token: int, ttl: float) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                update(t.runs)
                .where(
                    t.runs.c.id == run_id,
                    t.runs.c.lease_owner == owner,
                    t.runs.c.lease_token == token,
                )
                .values(lease_expires_at=self.clock() + timedelta(seconds=ttl))
            )
        return result.rowcount == 1

    async def release_lease(self, run_id: str, owner: str, token: int) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(t.runs)
                .where(
                    t.runs.c.id == run_id,
                    t.runs.c.lease_owner == owner,
                    t.runs.c.lease_token == token,
                )
                .values(lease_owner=None, lease_expires_at=None)
            )
