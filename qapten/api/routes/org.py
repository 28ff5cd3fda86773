"""The org chart being served, and a health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qapten.api.deps import Caller, Context
from qapten.api.errors import QaptenRoute

router = APIRouter(tags=["org"], route_class=QaptenRoute)


@router.get("/org")
async def get_org(context: Context, _caller: Caller) -> dict[str, Any]:
    """The org chart: roles, who reports to whom, tools and autonomy."""
    chart = context.swarm.chart
    roles = {
        name: {
            "title": role.title,
            "reports_to": role.reports_to,
            "reports": [r.name for r in chart.reports(name)],
            "tools": list(role.tools),
            "autonomy": role.autonomy.model_dump(mode="json"),
            "model": None if role.model is None else str(role.model),
            "max_revisions": role.max_revisions,
            "max_steps": role.max_steps,
        }
        for name, role in chart.roles.items()
    }
    return {
        "name": chart.name,
        "root": chart.root.name,
        "max_steps": chart.max_steps,
        "roles": roles,
    }


@router.get("/healthz")
async def healthz(context: Context) -> dict[str, str]:
    """Liveness and database check; needs no token."""
    await context.swarm.store.list_runs(limit=1)
    return {"status": "ok"}
