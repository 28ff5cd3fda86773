"""Run leases: one writer advances a run at a time, fenced by a token that grows each claim."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.engine import Connection

from qapten.errors import RunNotFound
from qapten.store import tables as t
from qapten.store.base import FINISHED_RUN, StoreBase, _in_utc

# Built once (see store.py); b_* parameters are the WHERE's, the others the columns set.
_c = t.runs.c
_HOLDER = select(_c.status, _c.lease_owner, _c.lease_token, _c.lease_expires_at).where(
    _c.id == bindparam("b_run")
)
_CLAIM = update(t.runs).where(_c.id == bindparam("b_run"))
_HELD = update(t.runs).where(
    _c.id == bindparam("b_run"),
    _c.lease_owner == bindparam("b_owner"),
    _c.lease_token == bindparam("b_token"),
)


# Running, nobody holding a live lease, and untouched for a while: nobody is advancing it.
_ABANDONED = select(_c.id).where(
    _c.status == "running",
    or_(_c.lease_expires_at.is_(None), _c.lease_expires_at < bindparam("b_now")),
    _c.updated_at < bindparam("b_before"),
)


class Leases(StoreBase):
    async def abandoned_runs(self, *, idle_for: float) -> list[str]:
        """Runs with work in hand (``running``) that nobody has advanced or changed for
        `idle_for` seconds and whose lease, if any, has lapsed: their writer died, or the
        process that recorded their last change died before handing them on."""
        now = self.clock()
        params = {"b_now": now, "b_before": now - timedelta(seconds=idle_for)}
        return await self.read(lambda conn: list(conn.execute(_ABANDONED, params).scalars()))

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, unless_finished: bool = False
    ) -> int | None:
        """Claim the right to advance `run_id`; returns the fencing token, or None if held
        (or, with `unless_finished`, if the run has finished: nothing is claimed then)."""

        def claim(conn: Connection) -> int | None:
            now = self.clock()
            row = self._execute(conn, _HOLDER, {"b_run": run_id}).first
            if row is None:
                msg = f"no run with id {run_id!r}"
                raise RunNotFound(msg)
            if unless_finished and row["status"] in FINISHED_RUN:
                return None
            expires = _in_utc(row["lease_expires_at"])
            if row["lease_owner"] not in (None, owner) and expires is not None and expires > now:
                return None
            token = int(row["lease_token"]) + 1
            lease = {
                "lease_owner": owner,
                "lease_token": token,
                "lease_expires_at": now + timedelta(seconds=ttl),
            }
            self._execute(conn, _CLAIM, {"b_run": run_id, **lease})
            return token

        return await self.write(claim)

    async def renew_lease(self, run_id: str, owner: str, token: int, ttl: float) -> bool:
        def renew(conn: Connection) -> bool:
            held = {"b_run": run_id, "b_owner": owner, "b_token": token}
            expires = self.clock() + timedelta(seconds=ttl)
            return self._execute(conn, _HELD, {**held, "lease_expires_at": expires}).rowcount == 1

        return await self.write(renew)

    async def release_lease(self, run_id: str, owner: str, token: int) -> None:
        def release(conn: Connection) -> None:
            held = {"b_run": run_id, "b_owner": owner, "b_token": token}
            self._execute(conn, _HELD, {**held, "lease_owner": None, "lease_expires_at": None})

        await self.write(release)
