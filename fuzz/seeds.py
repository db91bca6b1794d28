"""Valid inputs for each fuzz target, in that target's input layout (see ``targets.py``).

Built at run time from the project's own encoders and the bundled real captures, so
no binary corpus is kept in the repository: ``python -m fuzz.seeds DIR`` writes them
as files for an atheris/libFuzzer corpus directory.
"""
from __future__ import annotations

import functools
import io
import random
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from dissectors.remoting.command import JSON, ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import encode

from . import targets

CAPTURES = Path(__file__).resolve().parent.parent / "captures"


@functools.lru_cache(maxsize=1)
def _frames() -> list[bytes]:
    from rmqsniff.synth import conversation

    rng = random.Random(7)
    out = []
    for kind in ("producer", "consumer", "namesrv"):
        for t in conversation(rng, 4, kind, ser_mix=0.5):
            out.append(encode(t.request))
            if t.response is not None:
                out.append(encode(t.response))
    out.append(encode(RemotingCommand(3442, 0, 9, "GO", 0, "r", {"topic": "T", "consumerGroup": "G"}, None, ROCKETMQ)))
    out.append(encode(RemotingCommand(0, 1, 9, "CPP", 0, "remark", None, b"body", JSON)))
    return out


def _feed_op(n: int) -> bytes:
    """Bytes of a 'feed n bytes' op of remoting_stream (n <= 1536)."""
    for op in range(24, 256):
        for b in range(256):
            if ((op << 8 | b) % 1536) + 1 == n:
                return bytes((op, b))
    raise ValueError(n)


def _stream_seeds() -> list[bytes]:
    data = b"".join(_frames())
    ops = b"".join(_feed_op(len(data[i:i + 1000])) + data[i:i + 1000] for i in range(0, len(data), 1000))
    gap = b"\x00\x00\x40"  # a 65-byte gap
    half = len(ops) // 2
    return [b"\x01" + ops, b"\x03" + ops, b"\x01" + ops[:half] + gap + ops[half:], b"\x00\x00\x80" + ops[:3000]]


def _body_seeds() -> list[bytes]:
    import zlib

    from dissectors.remoting.message import BatchMessage, StoredMessage, encode_batch, encode_stored_message

    codes = targets._BODY_CODES

    def at(code: int) -> int:
        return codes.index(code) if code in codes else 0

    stored = b"".join(encode_stored_message(StoredMessage(
        queue_id=1, queue_offset=i, physical_offset=4096 * i, born_timestamp=1700000000000, born_host="10.0.0.1:5000",
        store_timestamp=1700000000001, store_host="10.0.0.10:10911", body=b"hello" * i, topic="TopicTest",
        properties={"UNIQ_KEY": f"0A000001{i:024X}", "TAGS": "TagA", "KEYS": "k1 k2"})) for i in range(3))
    batch = encode_batch([BatchMessage(body=b"m%d" % i, properties={"TAGS": "t", "UNIQ_KEY": f"U{i}"})
                          for i in range(3)])
    route = (b'{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.10:10911"},"brokerName":"broker-a","cluster":"C"}],'
             b'"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSynFlag":0,"writeQueueNums":4}]}')
    heartbeat = (b'{"clientID":"c@1","consumerDataSet":[{"groupName":"G","subscriptionDataSet":[]}],'
                 b'"producerDataSet":[]}')
    return [
        bytes((at(11), 0x80)) + stored,
        bytes((at(320), 0)) + batch,
        bytes((at(105), 0x80)) + route,
        bytes((at(34), 0)) + heartbeat,
        bytes((at(10), 1)) + zlib.compress(b"x" * 5000),
        bytes((at(103), 0)) + b'{"topicConfigSerializeWrapper":{"topicConfigTable":{},"dataVersion":{"counter":1}}}',
    ]


_JSON_SEEDS = [
    b'{0:"a",1:"b"}',
    b'{{"brokerName":"b","queueId":0,"topic":"t"}:1}',
    b"{'a':'b',c:[1,2,3,],}",
    b'{"n":123456789012345678901234567890,"s":"\x01raw"}',
    b"[" * 600 + b"]" * 600,
]


def _hpack_seeds() -> list[bytes]:
    import hpack

    enc = hpack.Encoder()
    blocks = []
    for i in range(4):
        h = [(":method", "POST"), (":scheme", "http"), (":path", "/apache.rocketmq.v2.MessagingService/SendMessage"),
             (":authority", "127.0.0.1:8081"), ("content-type", "application/grpc"), ("x-mq-request-id", f"r{i}")]
        blocks.append(enc.encode(h, huffman=bool(i % 2)))
    one = b"".join(struct.pack(">H", len(b)) + b for b in blocks)
    return [b"\x00" + one, b"\x01" + one, b"\x00" + struct.pack(">H", 4) + b"\x3f\xe1\xff\x03"]


@functools.lru_cache(maxsize=1)
def _grpc_streams() -> list[tuple[bool, bytes]]:
    """(from_client, payload) of the first packets of the bundled gRPC capture, in order."""
    from rmqsniff.sources.link import tcp_segment
    from rmqsniff.sources.pcapfile import open_capture

    path = CAPTURES / "grpc_java.pcap"
    if not path.exists():
        return []
    out: list[tuple[bool, bytes]] = []
    with open_capture(str(path)) as r:
        for _ts, lt, frame in r:
            seg = tcp_segment(frame, lt)
            if type(seg) is tuple and seg[7] and 8081 in (seg[1], seg[3]):
                out.append((seg[3] == 8081, seg[7]))
            if len(out) >= 60:
                break
    return out


def _grpc_seeds() -> list[bytes]:
    parts = []
    for fc, data in _grpc_streams():
        for i in range(0, len(data), 2048):
            chunk = data[i:i + 2048]
            parts.append(bytes((8 | int(fc),)) + struct.pack(">H", len(chunk) - 1) + chunk)
    whole = b"".join(parts)
    return [b"\x00" + whole, b"\x01" + b"".join(parts[3:])] if parts else [b"\x00"]


def _protobuf_seeds() -> list[bytes]:
    from dissectors.grpc.schema import CLASSES
    from rmqsniff.pipeline import analyze

    names = sorted(CLASSES)
    out = []
    path = CAPTURES / "grpc_java.pcap"
    if path.exists():
        for ex in analyze([str(path)]).exchanges[:40]:
            for side in (ex.request, ex.response):
                for p in getattr(getattr(side, "command", None), "messages", []) or []:
                    if p.type_name and p.type_name.rsplit(".", 1)[-1] in CLASSES:
                        out.append(bytes((names.index(p.type_name.rsplit(".", 1)[-1]),)) + p.data)
    return out[:30] or [b"\x00"]


def _filter_seeds() -> list[bytes]:
    return [s.encode() for s in (
        'code == SEND_MESSAGE_V2 and topic ~ "order.*" and latency > 5ms',
        "status == error or (group in {CG_a, CG_b} and not tag)",
        "size >= 4KiB && !(client == 10.0.0.1) || version >= V4_8_0",
        "protocol == grpc and code in (SendMessage, ReceiveMessage)",
        "msgid ~ '^0A' and keys != k1",
    )]


def _capture_seeds() -> list[bytes]:
    out = []
    for name in ("remoting_json.pcap", "remoting_rocketmq.pcap", "grpc_python.pcap"):
        p = CAPTURES / name
        if p.exists():
            out.append(p.read_bytes()[:20000])
    from rmqsniff.capwriter import CaptureWriter, TcpSession

    frames = _frames()
    for fmt in ("pcap", "pcapng"):
        buf = io.BytesIO()
        w = CaptureWriter(buf, fmt)
        s = TcpSession(w, ("10.0.0.1", 40000), ("10.0.0.10", 10911), mss=536)
        s.handshake(1.0)
        for i, f in enumerate(frames[:8]):
            s.send(1.0 + i / 100, i % 2 == 0, f, ack=True)
        s.close(2.0)
        out.append(buf.getvalue())
    return out


def _tls_seeds() -> list[bytes]:
    """Each TLS connection of the bundled TLS capture (TLS 1.3 and 1.2, three ciphers), its
    segments in capture order as feed ops, plus one with a gap and one cut mid-handshake."""
    from rmqsniff.sources.link import tcp_segment
    from rmqsniff.sources.pcapfile import open_capture

    path = CAPTURES / "tls" / "grpc_python.pcap"
    if not path.exists():
        return [b""]
    conns: dict[tuple, list[bytes]] = {}
    seen: set[tuple] = set()  # (direction, seq): a retransmitted segment is fed once
    with open_capture(str(path)) as r:
        for _ts, lt, frame in r:
            seg = tcp_segment(frame, lt)
            if type(seg) is not tuple or not seg[7]:
                continue
            src, sport, dst, dport = seg[0], seg[1], seg[2], seg[3]
            fc = sport > dport  # the client's ephemeral port is the higher one here
            key = (dst, dport, src, sport) if fc else (src, sport, dst, dport)
            if (key, fc, seg[4]) in seen:
                continue
            seen.add((key, fc, seg[4]))
            data = seg[7]
            for i in range(0, len(data), 4096):
                chunk = data[i:i + 4096]
                conns.setdefault(key, []).append(bytes((4 | int(fc),)) + struct.pack(">H", len(chunk) - 1) + chunk)
    out = [b"".join(ops) for ops in conns.values()]
    if out:
        ops = next(iter(conns.values()))
        out.append(b"".join(ops[:4]) + b"\x01" + b"".join(ops[4:]))  # the client's side loses bytes
        out.append(b"".join(ops[:2]))
    return out


_TLS_KEYLOG_SEEDS = [
    b"# comment\nCLIENT_RANDOM " + b"ab" * 32 + b" " + b"cd" * 48 + b"\n",
    b"CLIENT_HANDSHAKE_TRAFFIC_SECRET " + b"01" * 32 + b" " + b"02" * 32 + b"\nSERVER_TRAFFIC_SECRET_0 "
    + b"01" * 32 + b" " + b"03" * 48 + b"\n",
    b"RSA Session-ID:" + b"AB" * 32 + b" Master-Key:" + b"CD" * 48 + b"\n",
]


def _reassembly_seeds() -> list[bytes]:
    return [b"", bytes((1, 0, 0, 255, 0, 0, 200, 0)), bytes((1, 0, 10, 3, 0, 1, 0, 50, 1, 0, 10, 3))]


SEEDS: dict[str, Callable[[], Iterable[bytes]]] = {
    "remoting_frame": _frames,
    "remoting_stream": _stream_seeds,
    "remoting_body": _body_seeds,
    "fastjson": lambda: list(_JSON_SEEDS),
    "hpack": _hpack_seeds,
    "grpc_connection": _grpc_seeds,
    "protobuf": _protobuf_seeds,
    "filter": _filter_seeds,
    "capture": _capture_seeds,
    "tcp_reassembly": _reassembly_seeds,
    "tls_connection": _tls_seeds,
    "tls_keylog": lambda: list(_TLS_KEYLOG_SEEDS) + [(CAPTURES / "tls" / "grpc_python.keys").read_bytes()],
}
assert set(SEEDS) == set(targets.TARGETS)


@functools.cache
def _cached(name: str) -> tuple[bytes, ...]:
    return tuple(SEEDS[name]())


def seeds(name: str) -> list[bytes]:
    """Valid inputs of target ``name`` (built once per process)."""
    return list(_cached(name))


def write_corpus(name: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    items = seeds(name)
    for i, s in enumerate(items):
        (directory / f"seed-{i:03d}").write_bytes(s)
    return len(items)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus")
    for t in SEEDS:
        print(t, write_corpus(t, out / t))
