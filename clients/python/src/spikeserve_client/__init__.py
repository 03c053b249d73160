"""spikeserve-client: anytime inference on spiking neural networks, from Python.

    from spikeserve_client import Client

    with Client("localhost:8001") as client:
        for item in client.stream("digits", image, threshold=0.95):
            print(item)              # a Partial after every timestep, then the Result

Sync (:class:`Client`) and asyncio (:class:`AsyncClient`) gRPC clients with ``infer``, ``stream``,
``session``, ``list_models`` and ``model``; HTTP clients (:class:`HttpClient`, :class:`AsyncHttpClient`)
for the ``/v1`` JSON and Server-Sent Events API; event-file reading and replay.
"""

from ._convert import Policy
from .aio import AsyncClient, AsyncSession, AsyncStream
from .client import Client, Session, Stream
from .errors import SpikeserveError
from .events import EventFileError, read_events
from .http_client import AsyncHttpClient, AsyncHttpStream, HttpClient, HttpStream
from .replay import replay
from .results import CalibratedThreshold, ExitReason, ModelInfo, Partial, Result, StreamItem

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncHttpClient",
    "AsyncHttpStream",
    "AsyncSession",
    "AsyncStream",
    "CalibratedThreshold",
    "Client",
    "EventFileError",
    "ExitReason",
    "HttpClient",
    "HttpStream",
    "ModelInfo",
    "Partial",
    "Policy",
    "Result",
    "Session",
    "SpikeserveError",
    "Stream",
    "StreamItem",
    "__version__",
    "read_events",
    "replay",
]
