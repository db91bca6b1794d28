"""Wire chunks through rmqsniff's gRPC handler: ``run`` feeds ``(from_client, bytes, ts)``
chunks (as :class:`tests.support.grpc_wire.Wire` records them) to a :class:`GrpcHandler`
on one connection and returns the paired exchanges and the stats."""
from __future__ import annotations

from rmqsniff.model import Connection, Exchange
from rmqsniff.pairing import PairingSink
from rmqsniff.protocols.grpc.handler import GrpcHandler
from rmqsniff.stats import Stats

CONN = Connection(0, ("10.0.0.1", 50000), ("10.0.0.2", 8081))


def run(chunks, mid_stream: bool = False, chunk: int | None = None, lost: dict | None = None):
    """Feed (from_client, bytes, ts) chunks to a handler; returns (exchanges, stats)."""
    stats = Stats()
    out: list[Exchange] = []
    sink = PairingSink(stats, out.append)
    h = GrpcHandler(CONN, sink, stats, mid_stream=mid_stream)
    for fc, data, ts in chunks:
        if chunk:
            for i in range(0, len(data), chunk):
                h.data(fc, data[i:i + chunk], ts)
        else:
            h.data(fc, data, ts)
    h.close()
    sink.flush()
    return out, stats
