"""Cross-check of the gRPC decoder with tshark using the project's .proto files
(``dissectors/grpc/proto``, generated from ``schema.py``) on the real captures.

tshark reads each capture with port 8081 as HTTP/2, gRPC messages embedded under their
HTTP/2 frame (so each message has its stream id) and every protobuf field exported as a
``pbf.<message>.<field>`` field.  Asserted, per capture:

* the (TCP connection, stream id, method) of every call tshark sees equals rmqsniff's;
* the sequence of protobuf message types on each (connection, stream, direction) is the same;
* every string / integer / enum / bytes field value tshark extracted from each message
  equals the value in rmqsniff's decoded message (e.g. ``SendResultEntry.message_id``,
  ``Resource.name``, ``Status.code``, ``Message.body``), with the same set of fields.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from dissectors.grpc import schema
from dissectors.grpc.proto import generate
from rmqsniff.pipeline import analyze
from tests.support.prerequisites import unavailable

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
PROTO_DIR = ROOT / "dissectors" / "grpc" / "proto"
PORT = 8081
PKG = schema.PACKAGE
# FieldDescriptor types compared value by value (floats/bools: formatting differs, none in the captures)
_STRINGS = {9}  # TYPE_STRING
_INTS = {3, 4, 5, 13, 14, 17, 18}  # int64 uint64 int32 uint32 enum sint32 sint64
_BYTES = {12}
EMPTY = "<empty message>"  # a zero-length gRPC message: tshark shows no protobuf type for it


@pytest.fixture(scope="module")
def wkt_dir(tmp_path_factory):
    """google/protobuf/{duration,timestamp}.proto: Debian's tshark does not bundle them."""
    d = tmp_path_factory.mktemp("wkt")
    generate.write(str(d), generate.well_known_types())
    return d


def tshark_packets(pcap: Path, wkt: Path) -> list[dict]:
    if shutil.which("tshark") is None:
        unavailable("`tshark` not found on PATH (Wireshark's CLI cross-checks the gRPC decode)")
    # one UAT record per -o: (directory, load all its files); the WKT dir only serves imports
    cmd = ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={PORT},http2",
           "-o", f'uat:protobuf_search_paths:"{PROTO_DIR.as_posix()}","TRUE"',
           "-o", f'uat:protobuf_search_paths:"{wkt.as_posix()}","FALSE"',
           "-o", "protobuf.pbf_as_hf:TRUE", "-o", "grpc.embedded_under_http2:TRUE",
           "-Y", f"tcp.port=={PORT}", "-T", "json", "--no-duplicate-keys"]
    # a private (empty) profile: the user's Wireshark preferences cannot change the result
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(wkt.parent / "wireshark-profile"))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _list(x) -> list:
    return x if isinstance(x, list) else [] if x is None else [x]


def _tshark_fields(tree, out: dict[str, list]) -> None:
    """pbf.* leaves of a protobuf tree (repeated keys were merged into lists by tshark)."""
    if isinstance(tree, list):
        for t in tree:
            _tshark_fields(t, out)
        return
    if not isinstance(tree, dict):
        return
    for k, v in tree.items():
        if k.startswith("pbf.") and not k.endswith("_tree"):
            out[k].extend(_list(v))
        if isinstance(v, (dict, list)):
            _tshark_fields(v, out)


def from_tshark(packets: list[dict]):
    """{(client, stream): method} from request HEADERS and
    {(client, stream, from_client): [(type, {pbf key: values})]} from gRPC messages."""
    calls: dict[tuple, str] = {}
    msgs: dict[tuple, list] = defaultdict(list)
    problems = []
    for p in packets:
        layers = p["_source"]["layers"]
        ip, tcp = layers["ip"], layers["tcp"]
        src = (ip["ip.src"], int(tcp["tcp.srcport"]))
        dst = (ip["ip.dst"], int(tcp["tcp.dstport"]))
        from_client = dst[1] == PORT
        client = src if from_client else dst
        raw = json.dumps(layers)
        for bad in ("_ws.malformed", "protobuf.field.message_type_not_found", "protobuf.failed_parse",
                    "grpc.body_malformed", "grpc.body_decompression_failed"):
            if bad in raw:
                problems.append((layers["frame"]["frame.number"], bad))
        for frame in _list(layers.get("http2")):
            for st in _list(frame.get("http2.stream")):
                if "http2.streamid" not in st:
                    continue  # the connection preface
                sid = int(st["http2.streamid"])
                if st.get("http2.type") == "1" and from_client:
                    for h in _list(st.get("http2.header")):
                        if h.get("http2.header.name") == ":path":
                            calls[(client, sid)] = h["http2.header.value"].rsplit("/", 1)[1]
                pbs = iter(_list(frame.get("protobuf")))
                for g in _list(frame.get("grpc")):
                    if g["grpc.message_length"] == "0":  # no protobuf tree for an empty message
                        msgs[(client, sid, from_client)].append((EMPTY, {}))
                        continue
                    pb = next(pbs)
                    fields: dict[str, list] = defaultdict(list)
                    _tshark_fields(pb, fields)
                    name = _list(pb["protobuf.message.name"])[0]
                    msgs[(client, sid, from_client)].append((name.removeprefix(PKG + "."), dict(fields)))
                assert next(pbs, None) is None
    return calls, msgs, problems


def _bytes_text(b: bytes) -> str:
    return ":".join(f"{c:02x}" for c in b)


def _our_fields(m, out: dict[str, list]) -> None:
    """The same pbf.<message>.<field> -> values view of a decoded protobuf message."""
    for f, v in m.ListFields():
        key = f"pbf.{m.DESCRIPTOR.full_name}.{f.name}"
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            continue  # map entries: Wireshark names their type <field>MapEntry
        values = list(v) if f.is_repeated else [v]
        if f.message_type is not None:
            for sub in values:
                _our_fields(sub, out)
        elif f.type in _STRINGS:
            out[key].extend(values)
        elif f.type in _INTS:
            out[key].extend(str(int(x)) for x in values)
        elif f.type in _BYTES:
            out[key].extend(_bytes_text(x) for x in values)


def _comparable(fields: dict[str, list]) -> dict[str, list]:
    keep = {}
    for k, v in fields.items():
        full, _, fname = k[4:].rpartition(".")
        try:
            f = schema.POOL.FindMessageTypeByName(full).fields_by_name[fname]
        except KeyError:
            continue  # map entries and well-known types
        if f.message_type is None and f.type in _STRINGS | _INTS | _BYTES:
            keep[k] = sorted(v)
    return keep


def from_rmqsniff(pcap: Path):
    a = analyze([str(pcap)])
    calls: dict[tuple, str] = {}
    msgs: dict[tuple, list] = {}
    for ex in a.exchanges:
        if ex.protocol != "grpc":
            continue
        client = ex.connection.client
        for side in (ex.request, ex.response):
            if side is None:
                continue
            cmd = side.command
            assert cmd.dropped == 0
            if cmd.from_client and cmd.path is not None:
                calls[(client, cmd.stream_id)] = cmd.method
            out = []
            for p in cmd.messages:
                assert p.message is not None, p.error
                fields: dict[str, list] = defaultdict(list)
                _our_fields(p.message, fields)
                out.append((p.type_name if p.data else EMPTY, dict(fields)))
            if out:
                msgs[(client, cmd.stream_id, cmd.from_client)] = out
    return calls, msgs


@pytest.fixture(scope="module", params=["grpc_java", "grpc_python"])
def both(request, wkt_dir):
    pcap = CAPTURES / f"{request.param}.pcap"
    if not pcap.exists():
        pytest.skip(f"real capture {pcap.name} not in captures/")
    return request.param, from_tshark(tshark_packets(pcap, wkt_dir)), from_rmqsniff(pcap)


def test_tshark_decodes_the_gRPC_traffic_cleanly_with_our_protos(both):
    _, (calls, msgs, problems), _ = both
    assert calls and msgs
    assert problems == []
    assert all(name in schema.MESSAGES or name == EMPTY for lst in msgs.values() for name, _ in lst)


def test_same_calls_connections_stream_ids_and_methods(both):
    name, (t_calls, _, _), (r_calls, _) = both
    assert set(t_calls.items()) == set(r_calls.items())
    # and both saw every send the client made (one message per SendMessage in these scenarios)
    truth = json.loads((CAPTURES / f"{name}.truth.json").read_text())
    assert sum(1 for m in t_calls.values() if m == "SendMessage") == len(truth["sent"])


def test_same_protobuf_messages_per_stream_and_direction(both):
    _, (_, t_msgs, _), (_, r_msgs) = both
    assert set(t_msgs) == set(r_msgs)
    for key in r_msgs:
        assert [t for t, _ in t_msgs[key]] == [t for t, _ in r_msgs[key]], key


def test_field_values_tshark_extracted_equal_rmqsniffs(both):
    _, (_, t_msgs, _), (_, r_msgs) = both
    compared: defaultdict[str, int] = defaultdict(int)
    for key, ours in r_msgs.items():
        for (_t_type, t_fields), (r_type, r_fields) in zip(t_msgs[key], ours, strict=False):
            t, r = _comparable(t_fields), _comparable(r_fields)
            assert t == r, (key, r_type)
            for k in r:
                compared[k] += len(r[k])
    # the named examples were really compared (not vacuous)
    for k in (f"pbf.{PKG}.Resource.name", f"pbf.{PKG}.SystemProperties.message_id",
              f"pbf.{PKG}.SendResultEntry.message_id", f"pbf.{PKG}.Status.code", f"pbf.{PKG}.Message.body",
              f"pbf.{PKG}.AckMessageEntry.receipt_handle"):
        assert compared[k] > 0, k
