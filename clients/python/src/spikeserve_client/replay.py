"""Replays a recording into a session, in real time or as fast as possible."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ._convert import event_array
from .client import Client
from .results import Partial, Result


def chunks(events: npt.ArrayLike, chunk_us: int) -> Iterator[tuple[int, npt.NDArray[np.int64]]]:
    """``(end_us, rows)`` for consecutive windows of ``chunk_us``: the events captured by ``end_us``
    (empty windows are skipped)."""
    if chunk_us <= 0:
        raise ValueError(f"the chunk length must be positive, got {chunk_us} us")
    rows = event_array(events)
    if rows.size == 0:
        return
    window = rows[:, 2] // chunk_us
    starts = np.flatnonzero(np.r_[True, window[1:] != window[:-1]])
    for begin, end in zip(starts, [*starts[1:], len(rows)], strict=True):
        yield int((window[begin] + 1) * chunk_us), rows[begin:end]


def replay(
    client: Client,
    model: str,
    events: npt.ArrayLike,
    *,
    realtime: bool = True,
    speed: float = 1.0,
    chunk_ms: float = 10.0,
    on_item: Callable[[Partial | Result], None] | None = None,
    **policy: Any,
) -> Result:
    """Streams ``events`` (``[N, 4]``: ``x, y, t_us, p``) into a session of ``model`` in chunks of
    ``chunk_ms``, each sent once its last microsecond has passed (``realtime``, scaled by ``speed``) or
    at once; half-closes after the last chunk. ``on_item`` sees every partial and the answer, which is
    returned. ``policy``: the keyword arguments of :meth:`Client.session`."""
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    pieces = list(chunks(events, max(1, round(chunk_ms * 1000))))
    session = client.session(model, **policy)
    failure: list[BaseException] = []

    def send() -> None:
        started = time.monotonic()
        try:
            for end_us, rows in pieces:
                if session.result is not None:
                    return
                if realtime:
                    wait = started + end_us / 1e6 / speed - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                session.send_events(rows)
            session.close_input()
        except BaseException as error:  # surfaced by the caller's thread
            failure.append(error)
            session.cancel()

    sender = threading.Thread(target=send, name="spikeserve-replay", daemon=True)
    sender.start()
    try:
        for item in session:
            if on_item is not None:
                on_item(item)
    finally:
        if session.result is None:
            session.cancel()
        sender.join(timeout=5)
    if failure:
        raise failure[0]
    return session.final()
