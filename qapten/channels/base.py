"""What a channel is to the notifier (qapten.channels.notifier): something that delivers a
`Notice` to one of its destinations, and says where it posted so that later notices about the
same proposal can update that message."""

from __future__ import annotations

from typing import Any, Protocol

from qapten.channels.notices import Notice

MessageRef = dict[str, Any]
"""Where a channel posted a message (JSON-ready: Slack's channel and ts, Telegram's chat and
message id), kept in the delivery log."""


class DeliveryFailed(Exception):
    """The channel could not deliver now. The notifier tries again later, with backoff (and
    not before `retry_after` seconds, when the receiver said how long to wait), unless
    `permanent` (a request the receiver will never take): then the delivery is failed at once."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


def seconds_to_wait(retry_after: str | None) -> float | None:
    """An HTTP ``Retry-After`` header in seconds (the delay form; a date is not honoured)."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


class Channel(Protocol):
    kind: str
    """``slack``, ``telegram`` or ``webhook``: the first part of its destinations."""

    async def send(
        self, notice: Notice, target: str, posted: MessageRef | None
    ) -> MessageRef | None:
        """Deliver `notice` to `target` (a channel id, chat id or webhook name). `posted` is
        where this channel posted the first notice of the same proposal at `target` (None if
        it did not): a closing notice updates that message, a reminder answers it. Returns
        where it posted, if anywhere. Raises `DeliveryFailed`."""
        ...

    async def aclose(self) -> None:
        """Release the channel's connections."""
        ...
