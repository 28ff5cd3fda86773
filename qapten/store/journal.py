"""The tool journal: every tool call, started before it runs and finished after, with events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from qapten.store import tables as t
from qapten.store.base import StoreBase, ToolCall, _record

# Built once (see store.py); b_* parameters are the WHERE's, the others the columns set.
_c = t.tool_calls.c
_CALL = select(t.tool_calls).where(_c.call_id == bindparam("b_call"))
_START = insert(t.tool_calls)
_FINISH = update(t.tool_calls).where(_c.call_id == bindparam("b_call"))
_CALL_RUN = select(_c.run_id, _c.tool).where(_c.call_id == bindparam("b_call"))


class Journal(StoreBase):
    async def get_tool_call(self, call_id: str) -> ToolCall | None:
        row = await self.read(lambda conn: conn.execute(_CALL, {"b_call": call_id}).first())
        return None if row is None else _record(ToolCall, row._mapping)

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
    ) -> None:
        def start(conn: Connection) -> None:
            call = {"call_id": call_id, "run_id": run_id, "task_id": task_id, "role": role}
            conn.execute(
                _START,
                {
                    **call,
                    "tool": tool,
                    "args": args,
                    "status": "started",
                    "started_at": self.clock(),
                },
            )
            self._event(
                conn,
                run_id,
                "tool.started",
                {"call_id": call_id, "task_id": task_id, "role": role, "tool": tool},
            )

        await self.write(start)

    async def finish_tool_call(self, call_id: str, *, status: str, result: str) -> None:
        def finish(conn: Connection) -> None:
            done = {"status": status, "result": result, "finished_at": self.clock()}
            conn.execute(_FINISH, {"b_call": call_id, **done})
            row = conn.execute(_CALL_RUN, {"b_call": call_id}).one()
            self._event(
                conn,
                row.run_id,
                f"tool.{status}",
                {"call_id": call_id, "tool": row.tool, "result": result[:500]},
            )

        await self.write(finish)
