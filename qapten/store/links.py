"""The signed decision links already used (qapten.api.links): a link decides once.

A link carries a random nonce under its signature; using it records the nonce, and a second use
finds it there. The record is one insert that does nothing on a nonce already kept, so two
clicks racing each other (on one server or two) cannot both get through.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from qapten.store import tables as t
from qapten.store.base import StoreBase

# Built once (see store.py). RETURNING says whether the row went in: an insert's rowcount is -1
# through psycopg here, whether or not it did.
_nonce = t.link_uses.c.nonce
_USE = {
    "sqlite": sqlite_insert(t.link_uses).on_conflict_do_nothing().returning(_nonce),
    "postgresql": postgresql_insert(t.link_uses).on_conflict_do_nothing().returning(_nonce),
}
_USED_BY = select(t.link_uses.c.used_by).where(_nonce == bindparam("b_nonce"))


class Links(StoreBase):
    async def use_link(
        self, nonce: str, proposal_id: str, by: str, *, run_id: str | None = None
    ) -> bool:
        """Record the use of the link `nonce` (with a ``link.used`` event in `run_id`'s log):
        False, and nothing recorded, when it was used already."""
        row = {"nonce": nonce, "proposal_id": proposal_id, "used_by": by, "used_at": self.clock()}
        statement = _USE[self.engine.dialect.name]

        def use(conn: Connection) -> bool:
            if conn.execute(statement, row).first() is None:
                return False
            self._event(conn, run_id, "link.used", {"proposal_id": proposal_id, "by": by})
            return True

        return await self.write(use)

    async def link_used_by(self, nonce: str) -> str | None:
        """Who used the link `nonce`, or None while it is unused."""
        params = {"b_nonce": nonce}
        found = await self.read(lambda conn: conn.execute(_USED_BY, params).scalar_one_or_none())
        return None if found is None else str(found)
