"""The tool journal: every tool call, started before it runs and finished after, with events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from qapten.store import tables as t
from qapten.store.base import StoreBase, ToolCall, _record

# Built once (see store.py); b_* parameters are the WHERE's, the others the columns set.
_c = t.tool_calls.c
_CALL = select(t.tool_calls).where(_c.call_id == bindparam("b_call"))
# A call journaled already is left alone, and RETURNING says whether this start went in (see
# links.py): the first start of a call costs one statement, a replay one more to read the row.
_START = {
    "sqlite": sqlite_insert(t.tool_calls).on_conflict_do_nothing().returning(_c.call_id),
    "postgresql": postgresql_insert(t.tool_calls).on_conflict_do_nothing().returning(_c.call_id),
}
_FINISH = update(t.tool_calls).where(_c.call_id == bindparam("b_call"))


@dataclass(frozen=True)
class FinishedCall:
    """How a tool call ended, to be recorded with the rest of its step (`Store.record_act`)."""

    call_id: str
    run_id: str
    tool: str
    status: str
    result: str


class Journal(StoreBase):
    async def tool_calls(self, run_id: str) -> list[ToolCall]:
        query = (
            select(t.tool_calls)
            .where(t.tool_calls.c.run_id == run_id)
            .order_by(t.tool_calls.c.started_at)
        )
        rows = await self.read(lambda conn: conn.execute(query).all())
        return [_record(ToolCall, row._mapping) for row in rows]

    async def start_tool_call(
        self,
        call_id: str,
        *,
        run_id: str,
        task_id: str,
        role: str,
        tool: str,
        args: dict[str, Any],
    ) -> ToolCall | None:
        """Journal the start of a call, with its ``tool.started`` event: None when this start
        recorded it, else the call as the journal already had it (nothing is written then)."""
        row = {
            "call_id": call_id,
            "run_id": run_id,
            "task_id": task_id,
            "role": role,
            "tool": tool,
            "args": args,
            "status": "started",
            "started_at": self.clock(),
        }
        statement = _START[self.engine.dialect.name]

        def start(conn: Connection) -> ToolCall | None:
            if self._execute(conn, statement, row).first is None:
                known = conn.execute(_CALL, {"b_call": call_id}).one()
                return _record(ToolCall, known._mapping)
            data = {"call_id": call_id, "task_id": task_id, "role": role, "tool": tool}
            self._event(conn, run_id, "tool.started", data)
            return None

        return await self.write(start)

    def _finish_call(self, conn: Connection, finished: FinishedCall) -> None:
        """Record how a call ended, with its ``tool.<status>`` event (in `conn`'s transaction)."""
        done = {"status": finished.status, "result": finished.result, "finished_at": self.clock()}
        self._execute(conn, _FINISH, {"b_call": finished.call_id, **done})
        data = {"call_id": finished.call_id, "tool": finished.tool, "result": finished.result[:500]}
        self._event(conn, finished.run_id, f"tool.{finished.status}", data)
