"""What the bind interception says to the primary, over the worker's channel."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ClusterError
from ..ipc.channel import KIND_INTERNAL, Channel
from ..ipc.messages import ACT, CLOSE, LISTENING

QUERY_TIMEOUT = 30.0


class PrimaryLink:
    """Queries for shared addresses, and the 'listening' / 'close' notices.

    ``requests`` counts the queries sent (tests check that binds the
    interception leaves alone send none).
    """

    def __init__(self, channel: Channel, connected: Callable[[], bool]):
        self._channel = channel
        self._connected = connected
        self.requests = 0

    def connected(self) -> bool:
        """Still in the cluster (not disconnected, not disconnecting)."""
        return self._connected()

    def ask(self, query: dict[str, Any], fds: Iterable[int] = ()) -> tuple[dict[str, Any], list[int]]:
        """Send a ``query`` and wait for the reply; a lost primary is an OSError, as a bind error is."""
        self.requests += 1
        try:
            reply, rfds = self._channel.request_sync(query, fds, timeout=QUERY_TIMEOUT)
        except ClusterError as exc:
            raise OSError(errno.EAGAIN if exc.code == "ETIMEDOUT" else errno.ENOTCONN,
                          f"cannot share this address: {exc}") from exc
        return (reply if isinstance(reply, dict) else {}), list(rfds)

    def notify_listening(self, key: str, address: dict[str, Any]) -> None:
        self._channel.send(KIND_INTERNAL, {ACT: LISTENING, "key": key, "address": address})

    def notify_closed(self, key: str) -> None:
        """This worker no longer serves ``key`` (the primary may close its listener)."""
        if not self._channel.closed:
            self._channel.send(KIND_INTERNAL, {ACT: CLOSE, "key": key})
