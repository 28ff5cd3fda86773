"""The tool journal: every tool call, started before it runs and finished after, with events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from qapten.store import tables as t
from qapten.store.base import StoreBase, ToolCall, _record


class Journal(StoreBase):
    async def get_tool_call(self, call_id: str) -> ToolCall | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(t.tool_calls).where(t.tool_calls.c.call_id == call_id))
            ).first()
        return None if row is None else _record(ToolCall, row._mapping)

    async def tool_calls(self, run_id: str) -> list[ToolCall]:
        query = (
            select(t.tool_calls)
            .where(t.tool_calls.c.run_id == run_id)
            .order_by(t.tool_calls.c.started_at)
        )
        async with self.engine.connect() as conn:
            return [_record(ToolCall, row._mapping) for row in await conn.execute(query)]

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
        async with self._write() as conn:
            await conn.execute(
                insert(t.tool_calls).values(
                    call_id=call_id,
                    run_id=run_id,
                    task_id=task_id,
                    role=role,
                    tool=tool,
                    args=args,
                    status="started",
                    started_at=self.clock(),
                )
            )
            await self._event(
                conn,
                run_id,
                "tool.started",
                {"call_id": call_id, "task_id": task_id, "role": role, "tool": tool},
            )

    async def finish_tool_call(self, call_id: str, *, status: str, result: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(t.tool_calls)
                .where(t.tool_calls.c.call_id == call_id)
                .values(status=status, result=result, finished_at=self.clock())
            )
            row = (
                await conn.execute(
                    select(t.tool_calls.c.run_id, t.tool_calls.c.tool).where(
                        t.tool_calls.c.call_id == call_id
                    )
                )
            ).one()
            await self._event(
                conn,
                row.run_id,
                f"tool.{status}",
                {"call_id": call_id, "tool": row.tool, "result": result[:500]},
            )
