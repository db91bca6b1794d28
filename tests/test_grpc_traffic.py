"""Checks of the synthetic gRPC traffic generator (``tests/support/grpc_wire.py``)
against ``h2``'s own view and known protobuf bytes."""
from __future__ import annotations

from typing import cast

import h2.config
import h2.connection
import h2.events

from tests.support.grpc_wire import f, grpc_frame, producer_session


def test_generator_builds_valid_http2_that_h2_accepts():
    w, truth = producer_session(n_send=4, gzip_every=2)
    # replay both directions into fresh h2 peers: they must accept every byte
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    c.initiate_connection()
    c.data_to_send()
    paths = []
    for fc, data, _ in w.chunks:
        if fc:
            for ev in s.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    # header_encoding="utf-8": str headers, though h2 annotates them as bytes
                    paths.append(dict(cast("list[tuple[str, str]]", ev.headers))[":path"])
    assert [p.rsplit("/", 1)[1] for p in paths] == list(truth["streams"].values())
    assert w.bytes_of(True).startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


def test_protobuf_encoder_matches_known_bytes():
    # field 1 varint 150 -> 08 96 01 (protobuf encoding guide example)
    assert f(1, 150) == bytes.fromhex("089601")
    assert f(2, "testing") == bytes.fromhex("120774657374696e67")
    assert grpc_frame(b"\x08\x01") == b"\x00\x00\x00\x00\x02\x08\x01"
