"""Compare a decoded remoting capture with the ground truth its client wrote.

``check_remoting(pcap, truth)`` returns a list of problems (empty = the decoder agrees with the
client on every id, offset, digest and count). Used by the live tests and by the fast test
over the committed captures.

Allowed exceptions to "every request answered", each explained:

* the last long-poll (PULL_MESSAGE 11, LITE_PULL_MESSAGE 361, POP_MESSAGE 200050) of each
  (connection, topic, queue): the broker holds it until messages arrive or the poll times out;
  the client shut down and closed the connection first, so no response was ever sent;
* an orphan response that is the first frame seen on a connection opened before the capture
  started (its request predates the capture), e.g. the proxy's own long-poll on
  DefaultHeartBeatSyncerTopic;
* a request sent less than ``TAIL_SECONDS`` before the last exchange of the capture (in flight
  when tcpdump stopped; inter-server traffic keeps going after the client exits);
* the Go client's (language GO) UPDATE_CONSUMER_OFFSET requests when nothing else follows them on
  their connection: its consumer shutdown persists offsets with a "oneway" call that sets no
  RPC_ONEWAY flag and then closes the connection at once, before the broker's answer arrives;
* a gRPC call the client itself cancelled (RST_STREAM), e.g. the Python SimpleConsumer's last
  Heartbeat as it shuts down.

Clients other than Java's say how they differ in optional truth keys (default: the Java client):
``send_request_code`` (10 = SEND_MESSAGE with long header keys, 310 = SEND_MESSAGE_V2),
``oneway_flag`` (false: "oneway" sends carry no RPC_ONEWAY bit and are answered),
``client_language`` / ``client_version_code`` (checked on the client's requests for its topic).
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

LONG_POLL = {11: "PULL_MESSAGE", 361: "LITE_PULL_MESSAGE", 200050: "POP_MESSAGE"}
UPDATE_CONSUMER_OFFSET = 15
SEND_V1, SEND_V2, SEND_BATCH, END_TX, CHECK_TX = 10, 310, 320, 37, 39
SEND_COUNTERS = {SEND_V1: "send_message_v1", SEND_V2: "send_message_v2"}
TAIL_SECONDS = 0.5
# truth "kind" values sent one message per SEND_MESSAGE_V2 (or SEND_MESSAGE, see send_request_code) request
SINGLE_SEND_COUNTS = ("sync", "async", "oneway", "ordered", "delay", "timer", "compressed", "transaction_half",
                      "msg_trace")
COMMIT_OR_ROLLBACK = {"UNKNOW": "0", "COMMIT_MESSAGE": "8", "ROLLBACK_MESSAGE": "12"}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def analyze_capture(pcap: Path):
    from rmqsniff.pipeline import analyze

    return analyze([str(pcap)])


def _topic(cmd) -> str | None:
    ext = cmd.ext or {}
    return ext.get("b") or ext.get("topic")


def _props(cmd) -> dict[str, str]:
    from dissectors.remoting.message import parse_properties

    ext = cmd.ext or {}
    raw = ext.get("i") if "i" in ext else ext.get("properties")
    return parse_properties(raw) if raw else {}


def unexplained_statuses(res) -> list[str]:
    """Exchanges that are neither answered, oneway, nor one of the documented exceptions."""
    problems: list[str] = []
    exs = res.exchanges
    if not exs:
        return ["no exchanges decoded"]
    end_ts = max(e.ts for e in exs)
    last_poll: dict[tuple, int] = {}
    first_on_conn: dict[int, int] = {}
    last_other_on_conn: dict[int, int] = {}  # last exchange that is not UPDATE_CONSUMER_OFFSET
    for e in exs:
        first_on_conn.setdefault(e.connection.id, e.index)
        if e.code != UPDATE_CONSUMER_OFFSET:
            last_other_on_conn[e.connection.id] = e.index
        if e.request is not None and e.code in LONG_POLL and e.protocol != "grpc":  # remoting codes
            ext = e.request.command.ext or {}
            key = (e.connection.id, e.code, ext.get("topic"), ext.get("queueId"))
            last_poll[key] = e.index
    for e in exs:
        if e.status in ("answered",):
            continue
        if e.status == "oneway":
            if e.request is None or not e.request.command.is_oneway:
                problems.append(f"exchange {e.index} status oneway but request not flagged oneway")
            continue
        if e.status == "unanswered":
            if end_ts - e.ts > TAIL_SECONDS and not _unanswered_explained(e, last_poll, last_other_on_conn):
                what = e.request.command.method if e.protocol == "grpc" else e.request.command.ext
                problems.append(f"unanswered request code {e.code} at +{e.ts - exs[0].ts:.2f}s on "
                                f"{e.connection.label} ({what})")
            continue
        if e.status == "orphan":
            # On a connection opened before the capture began, a request sent before the start
            # (e.g. a long poll the broker holds for up to 30 s) can be answered at any later point.
            if e.connection.role_source != "syn":
                continue
            problems.append(f"orphan response code {e.response_code} on {e.connection.label}")
            continue
        problems.append(f"exchange {e.index} has unknown status {e.status!r}")
    return problems


def _unanswered_explained(e, last_poll: dict[tuple, int], last_other_on_conn: dict[int, int]) -> bool:
    """An unanswered request that is one of the documented exceptions (module docstring)."""
    if e.protocol == "grpc":
        return any(n.startswith("reset by the client") for n in e.notes)
    ext = e.request.command.ext or {}
    key = (e.connection.id, e.code, ext.get("topic"), ext.get("queueId"))
    if e.code in LONG_POLL and last_poll.get(key) == e.index:
        return True
    return (e.code == UPDATE_CONSUMER_OFFSET and e.request.command.language == "GO"
            and last_other_on_conn.get(e.connection.id, -1) < e.index)


def check_remoting(pcap: Path, truth: dict[str, Any], res=None) -> list[str]:
    """Every difference between the decoded capture and the client's ground truth."""
    res = res or analyze_capture(pcap)
    p: list[str] = []
    topic = truth["topic"]
    send_code = truth.get("send_request_code", SEND_V2)
    _check_counts(p, res, truth, send_code)
    _check_serialization(p, res, truth, topic)
    batch_uniq = _check_sends(p, res, truth, topic, send_code)
    if "checks" in truth:
        _check_transactions(p, res, truth)
    _check_pulled(p, res, truth, topic, batch_uniq)
    return p


def _check_counts(p: list[str], res, truth: dict[str, Any], send_code: int) -> None:
    """Decoder errors, unexplained statuses and the request counts per operation."""
    counts = truth.get("counts", {})
    snap = res.stats.snapshot()
    c = snap["counters"]
    codes = snap["codes"]

    def code_count(code: int) -> int:
        return codes.get(str(code), {}).get("requests", 0)

    if res.errors:
        p.append(f"decoder errors: {res.errors[:5]}")
    for name in ("request_decoding_error", "response_decoding_error"):
        if c.get(name, 0):
            p.append(f"{name} = {c[name]}")
    p += unexplained_statuses(res)

    # ---- counts per operation
    singles = sum(counts.get(k, 0) for k in SINGLE_SEND_COUNTS)
    # a client with enableMsgTrace also sends its trace records (to RMQ_SYS_TRACE_TOPIC), as many
    # as its dispatcher batches them into: those sends are counted apart, and must exist
    traced = sum(1 for ex in res.exchanges if ex.request is not None and ex.code == send_code
                 and _topic(ex.request.command) == "RMQ_SYS_TRACE_TOPIC") if truth.get("msg_trace") else 0
    if truth.get("msg_trace") and not traced:
        p.append("the client traces its messages (msg_trace) but no send to the trace topic was seen")
    if "msg_trace" in counts:  # the scenario recorded them (mqadmin's count of the trace topic): in ``singles``
        traced = 0
    for code, counter in SEND_COUNTERS.items():
        want = singles + traced if code == send_code else 0
        if c.get(counter, 0) != want:
            p.append(f"{counter} counter {c.get(counter, 0)} != {want} (client sends {singles} "
                     f"single messages with code {send_code})")
    if code_count(SEND_BATCH) != counts.get("batch", 0):
        p.append(f"SEND_BATCH_MESSAGE requests {code_count(SEND_BATCH)} != client batches {counts.get('batch', 0)}")
    if "end_transaction" in counts:
        want = counts["end_transaction"] + counts.get("end_transaction_from_check", 0)
        if code_count(END_TX) != want:
            p.append(f"END_TRANSACTION requests {code_count(END_TX)} != {want}")
        if code_count(CHECK_TX) != counts.get("check_transaction_state", 0):
            p.append(f"CHECK_TRANSACTION_STATE requests {code_count(CHECK_TX)} != "
                     f"{counts.get('check_transaction_state', 0)}")


def _check_serialization(p: list[str], res, truth: dict[str, Any], topic: str) -> None:
    """Header serialization (and language / version) of the scenario client's own requests."""
    want_ser = 1 if truth.get("serialize_type", "JSON").upper() == "ROCKETMQ" else 0
    want_lang = (truth.get("client_language"), truth.get("client_version_code"))
    for e in res.exchanges:
        if e.request is not None and not e.server_initiated and _topic(e.request.command) == topic:
            rc = e.request.command
            if rc.serialize != want_ser:
                p.append(f"request code {e.code} serialize {rc.serialize} != {want_ser}")
                break
            if want_lang[0] is not None and (rc.language, rc.version) != want_lang:
                p.append(f"request code {e.code} language/version {(rc.language, rc.version)} != {want_lang}")
                break


def _check_sends(p: list[str], res, truth: dict[str, Any], topic: str, send_code: int) -> list[str]:
    """Sends: ids, queues, offsets, digests; the UNIQ_KEYs the batch sends were answered with."""
    sent = truth["sent"]
    by_id = {s["msg_id"]: s for s in sent if s["kind"] != "batch"}
    members = [s for s in sent if s["kind"] == "batch"]
    seen: dict[str | None, Any] = {}
    batch_uniq: list[str] = []
    for e in res.exchanges:
        if e.request is None or _topic(e.request.command) != topic:
            continue
        if e.code in SEND_COUNTERS:
            if e.code != send_code:
                p.append(f"send with request code {e.code}, the client uses {send_code}")
            props = _props(e.request.command)
            uk = props.get("UNIQ_KEY")
            seen[uk] = e
            s = by_id.get(uk)
            if s is None:
                p.append(f"send of unknown UNIQ_KEY {uk}")
                continue
            assert uk is not None  # by_id has only ids
            _check_send(p, e, s, props, uk, truth)
        elif e.code == SEND_BATCH:
            uniq = _check_batch(p, e, members)
            if uniq is not None:
                batch_uniq.append(uniq)
    missing = set(by_id) - set(seen)
    if missing:
        p.append(f"{len(missing)} client sends not in the capture: {sorted(missing)[:3]}")
    return batch_uniq


def _check_send(p: list[str], e, s: dict[str, Any], props: dict[str, str], uk: str, truth: dict[str, Any]) -> None:
    """One single-message send against the client's record ``s`` of it."""
    from dissectors.remoting.bodies import decode_body

    body = decode_body(e.request.command)
    if body.errors or sha(body.value) != s["body_sha256"]:
        p.append(f"send body of {uk} differs from the client's ({body.errors})")
    if props.get("TAGS") != s["tags"] or props.get("KEYS") != s["keys"]:
        p.append(f"send {uk}: tags/keys {props.get('TAGS')}/{props.get('KEYS')} != {s['tags']}/{s['keys']}")
    for k, v in s.get("user_properties", {}).items():
        # "__transactionId__" is added to the Message object by the client after the send
        if not k.startswith("__") and props.get(k) != v:
            p.append(f"send {uk}: property {k}={props.get(k)!r} != {v!r}")
    if s["kind"] == "oneway":
        want_status = "oneway" if truth.get("oneway_flag", True) else "answered"
        if e.status != want_status:
            p.append(f"send {uk} was sent oneway but is {e.status} in the capture, not {want_status}")
        return
    rext = (e.response.command.ext or {}) if e.response else {}
    # a TransactionSendResult carries no offset msg id, so only queue and offset are compared
    got = (rext.get("msgId") if s.get("offset_msg_id") else None, rext.get("queueId"), rext.get("queueOffset"))
    want = (s.get("offset_msg_id"), str(s["queue_id"]), str(s["queue_offset"]))
    if got != want:
        p.append(f"send {uk}: response (msgId, queueId, queueOffset) {got} != client {want}")


def _check_batch(p: list[str], e, members: list[dict[str, Any]]) -> str | None:
    """One batch send against the client's batch ``members``; the batch's UNIQ_KEY from the
    answer (None when the body could not be decoded)."""
    from dissectors.remoting.bodies import decode_body

    bv = decode_body(e.request.command)
    if bv.kind != "batch" or bv.errors:
        p.append(f"batch body not decoded: {bv.kind} {bv.errors}")
        return None
    if [m.unique_key for m in bv.value] != [s["msg_id"] for s in members]:
        p.append("batch member UNIQ_KEYs differ from the client's")
    if [sha(m.body) for m in bv.value] != [s["body_sha256"] for s in members]:
        p.append("batch member bodies differ from the client's")
    rext = (e.response.command.ext or {}) if e.response else {}
    if (rext.get("msgId") or "").split(",") != [s["offset_msg_id"] for s in members]:
        p.append(f"batch response msgId {rext.get('msgId')} != client offset ids")
    if members and rext.get("queueOffset") != str(members[0]["queue_offset"]):
        p.append(f"batch queueOffset {rext.get('queueOffset')} != {members[0]['queue_offset']}")
    return rext.get("transactionId", "")


def _check_transactions(p: list[str], res, truth: dict[str, Any]) -> None:
    """Transaction: check-back and end-transaction states."""
    from dissectors.remoting.bodies import decode_body

    checked: Counter[str] = Counter()
    states: Counter[tuple[str | None, str | None, str | None]] = Counter()
    for e in res.exchanges:
        if e.code == CHECK_TX and e.request is not None:
            v = decode_body(e.request.command)
            for m in v.value if v.kind == "messages" else []:
                checked[m.unique_key] += 1
        if e.code == END_TX and e.request is not None:
            ext = e.request.command.ext or {}
            states[(ext.get("msgId"), ext.get("commitOrRollback"), ext.get("fromTransactionCheck"))] += 1
    if dict(checked) != truth["checks"]:
        p.append(f"check-backs in capture {dict(checked)} != client {truth['checks']}")
    for s in truth["sent"]:
        want = (s["msg_id"], COMMIT_OR_ROLLBACK[s["planned_state"]], "false")
        if states[want] != 1:
            p.append(f"END_TRANSACTION {want} seen {states[want]} times")
    answers = truth.get("check_answers") or {f"{uk} COMMIT_MESSAGE": n for uk, n in truth["checks"].items()}
    for key, n in answers.items():
        uk, answer = key.split()
        want = (uk, COMMIT_OR_ROLLBACK[answer], "true")
        if states[want] != n:
            p.append(f"END_TRANSACTION {want} (answer to a check-back) seen {states[want]} times, not {n}")


def _check_pulled(p: list[str], res, truth: dict[str, Any], topic: str, batch_uniq: list[str]) -> None:
    """Pulled / popped messages: ids and digests against what the consumers received."""
    pulled = _pulled_digests(p, res, topic)
    received: dict[tuple, str] = {}
    for bucket in truth.get("received", {}).values():
        for r in bucket:
            if r["topic"] == topic:
                received[(r["msg_id"], r["offset_msg_id"])] = r["body_sha256"]
    if set(pulled) != set(received):
        only_c = sorted(set(pulled) - set(received))[:3]
        only_t = sorted(set(received) - set(pulled))[:3]
        p.append(f"pulled ids differ: capture-only {only_c}, client-only {only_t}")
    for k in set(pulled) & set(received):
        if pulled[k] != received[k]:
            p.append(f"pulled body digest of {k} differs")
    # batch members are delivered under the batch's own UNIQ_KEY (the broker appends the batch's
    # properties to every member), not the per-member id the producer's SendResult reported
    members = {s["offset_msg_id"] for s in truth["sent"] if s["kind"] == "batch"}
    for (uk, off) in received:
        if off in members and uk not in batch_uniq:
            p.append(f"batch member {off} delivered as {uk}, not the batch UNIQ_KEY {batch_uniq}")


def _pulled_digests(p: list[str], res, topic: str) -> dict[tuple, str]:
    """(UNIQ_KEY, offset msg id) -> body digest of every message of ``topic`` a long poll returned."""
    from dissectors.remoting.bodies import decode_body

    pulled: dict[tuple, str] = {}
    for e in res.exchanges:
        if e.code not in LONG_POLL or e.response is None or e.response.command.code != 0:
            continue
        v = decode_body(e.response.command, e.request.command)
        if v.kind != "messages" or v.errors:
            p.append(f"{LONG_POLL[e.code]} response not decoded: {v.kind} {v.errors[:3]}")
            continue
        for m in v.value:
            if m.topic != topic:
                continue
            if not m.crc_ok:
                p.append(f"stored message {m.msg_id} has a bad body CRC")
            pulled[(m.unique_key, m.msg_id)] = sha(m.payload())
    return pulled


def grpc_traffic(pcap: Path, grpc_port: int) -> dict[str, int]:
    """Packets and payload bytes to/from the gRPC port (decoding comes with the gRPC dissector)."""
    import dpkt

    packets = payload = 0
    with open(pcap, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = _ip(buf)
            if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            if grpc_port in (tcp.sport, tcp.dport):
                packets += 1
                payload += len(tcp.data)
    return {"packets": packets, "payload_bytes": payload}


def _ip(buf: bytes):
    import dpkt

    try:
        eth = dpkt.ethernet.Ethernet(buf)
    except (dpkt.UnpackError, ValueError):
        return None
    return eth.data if isinstance(eth.data, (dpkt.ip.IP, dpkt.ip6.IP6)) else None


def grpc_id_sets(truth: dict[str, Any]) -> dict[str, set[str]]:
    """Sent and received message ids per consumer, for the coming gRPC decode assertions."""
    out: dict[str, set[str]] = defaultdict(set)
    out["sent"] = {s["msg_id"] for s in truth["sent"]}
    for name, bucket in truth.get("received", {}).items():
        out[name] = {r["msg_id"] for r in bucket}
    return dict(out)
