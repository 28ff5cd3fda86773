"""The delivery log of chat channels and webhooks (qapten.channels): what was sent where,
how many tries it took, and what failed."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from qapten.api.deps import Caller, Context, Cursor, refuse
from qapten.api.errors import ApiError, QaptenRoute
from qapten.api.schemas import DeliveryPublic, Page, keyset_page

router = APIRouter(prefix="/deliveries", tags=["deliveries"], route_class=QaptenRoute)


@router.get("", response_model=Page[DeliveryPublic])
async def list_deliveries(
    request: Request,
    context: Context,
    caller: Caller,
    cursor: Cursor,
    status: Literal["pending", "delivered", "failed"] | None = None,
    proposal_id: Annotated[str | None, Query(max_length=100)] = None,
    destination: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[DeliveryPublic]:
    """Deliveries, newest first, a page at a time (admins only: it shows where notices go)."""
    if caller.scope != "admin":
        message = f"{caller.name} ({caller.scope}) may not read the delivery log"
        raise await refuse(context, request, 403, "forbidden", message, who=caller.name)
    before = None
    if cursor is not None:  # keyset_page's cursor: (created_at, id) of the page's last row
        try:
            before = int(cursor[1])
        except ValueError:
            raise ApiError(422, "invalid_request", "cursor: not a delivery log's") from None
    found = await context.swarm.store.deliveries(
        status=status,
        proposal_id=proposal_id,
        destination=destination,
        before=before,
        limit=limit + 1,
    )
    return keyset_page(DeliveryPublic, found, limit)
