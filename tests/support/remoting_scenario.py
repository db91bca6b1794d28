"""A remoting capture whose every exchange the test wrote itself: ``SCENARIO`` (label ->
client endpoint, server, request, response or None, delay) written by ``write_scenario``
as one TCP connection per client endpoint; ``label_of`` maps an exchange back to its label."""
from __future__ import annotations

import zlib
from pathlib import Path

from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.frame import encode
from dissectors.remoting.message import (
    BatchMessage,
    StoredMessage,
    encode_batch,
    encode_stored_message,
    properties_to_string,
)
from rmqsniff.capwriter import CaptureWriter, TcpSession

BROKER = ("10.0.0.10", 10911)
NAMESRV = ("10.0.0.9", 9876)
T0 = 1_700_000_000.0


def _req(code, opaque, ext, body=None, lang="JAVA", version=479, flag=0):
    return RemotingCommand(code, flag, opaque, lang, version, None, ext, body)


def _resp(code, opaque, ext=None, body=None, remark=None):
    return RemotingCommand(code, 1, opaque, "JAVA", 479, remark, ext, body)


def _props(**kw):
    return properties_to_string(kw)


def stored(topic, uniq, qoff, phys, tag="TagB", body=b"pulled body", sys_flag=0):
    """A stored message as a broker would return it (store host 10.0.0.10:10911)."""
    return StoredMessage(queue_id=0, queue_offset=qoff, physical_offset=phys, born_timestamp=1_700_000_000_500,
                         born_host="10.0.1.9:5555", store_timestamp=1_700_000_000_600,
                         store_host="10.0.0.10:10911", body=body, topic=topic, sys_flag=sys_flag,
                         properties={"UNIQ_KEY": uniq, "TAGS": tag})


def offset_id(ip: str, port: int, phys: int) -> str:
    """Offset message id written out by hand: 4 IP bytes, int32 port, int64 offset, upper hex."""
    return (bytes(int(x) for x in ip.split(".")) + port.to_bytes(4, "big") + phys.to_bytes(8, "big")).hex().upper()


# label -> (client endpoint, server, request, response or None, delay seconds)
BATCH = [BatchMessage(body=b"b%d" % i, properties={"UNIQ_KEY": f"UB{i}", "TAGS": "TagC", "KEYS": f"bk{i}"})
         for i in range(3)]
SCENARIO = {
    "a1": (("10.0.1.1", 40001), BROKER,
           _req(310, 1001, {"a": "PG1", "b": "orders_eu", "e": "1", "f": "0", "g": "1700000000001",
                            "i": _props(UNIQ_KEY="U1", TAGS="TagA", KEYS="k1 k2")}, b"hello orders"),
           _resp(0, 1001, {"msgId": "M1", "queueId": "1", "queueOffset": "7"}), 0.002),
    "a2": (("10.0.1.1", 40001), BROKER,
           _req(310, 1002, {"a": "PG1", "b": "orders_us", "i": _props(UNIQ_KEY="U4")}, b"x"),
           _resp(2, 1002, remark="busy"), 0.008),
    "a3": (("10.0.1.1", 40001), BROKER,
           _req(310, 1003, {"a": "PG1", "b": "payments", "i": _props(UNIQ_KEY="U5")}, b"p" * 5000),
           _resp(0, 1003, {"msgId": "M5", "queueId": "0", "queueOffset": "1"}), 0.020),
    "a4": (("10.0.1.1", 40001), BROKER,
           _req(35, 1004, {"clientID": "c1", "producerGroup": "PG1"}, flag=2), None, 0.0),
    "a5": (("10.0.1.1", 40001), BROKER,
           _req(320, 1005, {"a": "PG1", "b": "batchy", "i": _props(WAIT="true")}, encode_batch(BATCH)),
           _resp(0, 1005, {"msgId": "MB0,MB1,MB2", "queueId": "2", "queueOffset": "10"}), 0.003),
    "b1": (("10.0.1.2", 40002), BROKER,
           _req(11, 2001, {"consumerGroup": "CG1", "topic": "orders_eu", "queueId": "0", "queueOffset": "0"},
                lang="GO", version=401),
           _resp(0, 2001, {"nextBeginOffset": "2"},
                 encode_stored_message(stored("orders_eu", "U2", 0, 4096))
                 + encode_stored_message(stored("orders_eu", "U3", 1, 8192, body=zlib.compress(b"squeezed text"),
                                                sys_flag=1))), 0.001),
    "b2": (("10.0.1.2", 40002), BROKER,
           _req(11, 2002, {"consumerGroup": "CG1", "topic": "orders_eu", "queueId": "0", "queueOffset": "2"},
                lang="GO", version=401),
           _resp(19, 2002, {"nextBeginOffset": "2"}), 0.030),
    "b3": (("10.0.1.2", 40002), BROKER,
           _req(38, 2003, {"consumerGroup": "CG1"}, lang="GO", version=401), None, 0.0),
    "c1": (("10.0.1.3", 40003), NAMESRV, _req(105, 3001, {"topic": "orders_eu"}),
           _resp(17, 3001, remark="no route"), 0.005),
}


def write_scenario(path: Path, scenario: dict = SCENARIO, fmt: str = "pcap") -> None:
    """Write the scenario's exchanges, one TCP connection per client endpoint, in order."""
    with open(path, "wb") as f:
        w = CaptureWriter(f, fmt)
        sessions: dict = {}
        ts = T0
        for client, server, req, resp, delay in scenario.values():
            s = sessions.get(client)
            if s is None:
                s = sessions[client] = TcpSession(w, client, server, isn_client=100, isn_server=900)
                s.handshake(ts)
            ts += 0.001
            s.send(ts, True, encode(req))
            if resp is not None:
                s.send(ts + delay, False, encode(resp))
            ts += max(delay, 0.0) + 0.001
        for s in sessions.values():
            s.close(ts + 0.01)
        w.close()


def label_of(ex) -> str:
    """The scenario label of an exchange (opaques are unique in the scenario)."""
    opaque = (ex.request or ex.response).command.opaque
    return next(k for k, v in SCENARIO.items() if v[2].opaque == opaque)
