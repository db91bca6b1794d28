"""Consumer state mapping: values staging returns are put into the later requests that refer to them.

A captured consumer refers, in later requests, to values its broker gave it: receipt handles
of popped messages, next offsets of pulls, stored consumer offsets. Replayed as recorded, those
would point at production's messages and offsets; :class:`ConsumerState` learns, from every
(recorded answer, replayed answer) pair, which replayed value stands for which recorded one and
rewrites the later requests with it.

**Pop (receipt handles).** A POP_MESSAGE answer carries messages (body) and, in its header,
``popTime``, ``invisibleTime``, ``reviveQid`` and ``startOffsetInfo`` (``type queueId
startOffset;...``). A client builds each message's receipt handle (``POP_CK``, sent back as
``extraInfo`` by ACK_MESSAGE / CHANGE_MESSAGE_INVISIBLETIME) exactly like
``MQClientAPIImpl.processPopResponse``::

    ckQueueOffset popTime invisibleTime reviveQid topicType brokerName queueId queueOffset

with ``ckQueueOffset`` the start offset of the message's queue in ``startOffsetInfo``,
``topicType`` 0 (normal), 1 (``%RETRY%group_topic``) or 2 (``%RETRY%group+topic``), and
``brokerName`` the broker the client asked (the request's ``bname``).

*Matching rule* - which replayed message stands for a recorded one, per POP_MESSAGE step:

1. the replayed message with the same ``UNIQ_KEY`` (replay keeps captured ids by default, so
   this is the message the captured one was produced as), first unused one wins;
2. otherwise the replayed message at the same position among the still unmatched messages of
   the same queue id, then at the same position among all still unmatched messages.

A recorded message is known by ``(popTime, topicType, queueId, queueOffset)`` - the fields of
its handle a later request repeats. ACK_MESSAGE / CHANGE_MESSAGE_INVISIBLETIME then get the
matched message's ``extraInfo``, ``queueId`` and ``offset``. A CHANGE_MESSAGE_INVISIBLETIME
answer gives the message a new handle (its ``popTime`` / ``invisibleTime`` / ``reviveQid``);
recorded and replayed new handles are paired too, so a later ack of that message is mapped.
A request whose recorded handle matched nothing is not sent (an ack of a message staging did
not hand out can only fail); the report counts it under ``unmapped`` and ``not_sent``.

**Batch ack.** BATCH_ACK_MESSAGE (5.x; in 5.3 only the proxy sends it, with
``enableBatchAck``) carries no ``extraInfo`` but, per ack, the handle fields ``so`` (ckQueueOffset),
``pt``, ``it``, ``rq``, ``r`` (topicType), ``q`` and a bit set of acked offsets ``so + i``. Each
recorded offset is looked up as ``(pt, r, q, so + i)`` like a single ack; the mapped handles are
regrouped into acks of their own ``so`` / ``pt`` / ``it`` / ``rq``. Offsets with no mapping are
left out (counted in ``dropped``); a batch with none left is not sent.

**Pull / offsets.** Per captured ``(topic, queueId)`` a recorded offset is paired with the
replayed one from answers that return an offset: PULL_MESSAGE / LITE_PULL_MESSAGE
``nextBeginOffset``, QUERY_CONSUMER_OFFSET ``offset``, GET_MAX_OFFSET / GET_MIN_OFFSET
``offset``, SEARCH_OFFSET_BY_TIMESTAMP ``offset``. Later PULL_MESSAGE ``queueOffset`` /
``commitOffset``, UPDATE_CONSUMER_OFFSET ``commitOffset`` equal to a recorded value get the
replayed value; a value never seen in an answer is sent as recorded (pull answers carry the
correct next offset anyway).

One :class:`ConsumerState` serves all sessions of one (copy, loop) running at the same time,
so a handle popped on one connection maps for an ack sent on another; an ack whose handle is
not known yet waits (at most ``--timeout``) for answers still outstanding that could teach it.
The state is dropped when the last session of its (copy, loop) ends.
"""
from __future__ import annotations

import asyncio
import base64
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from dissectors.remoting import codes as c
from dissectors.remoting.command import RemotingCommand
from dissectors.remoting.message import StoredMessage, decode_stored_messages

RETRY_PREFIX = "%RETRY%"
HANDLE_CODES = frozenset({c.ACK_MESSAGE, c.CHANGE_MESSAGE_INVISIBLETIME})
OFFSET_ANSWERS = frozenset({c.PULL_MESSAGE, c.LITE_PULL_MESSAGE, c.QUERY_CONSUMER_OFFSET, c.GET_MAX_OFFSET,
                            c.GET_MIN_OFFSET, c.SEARCH_OFFSET_BY_TIMESTAMP})
OFFSET_REQUESTS = {c.PULL_MESSAGE: ("queueOffset", "commitOffset"), c.LITE_PULL_MESSAGE: ("queueOffset",),
                   c.UPDATE_CONSUMER_OFFSET: ("commitOffset",)}
MAX_ACK_BITS = 1 << 16  # a bit set wider than this is not believed


def topic_type(topic: str) -> str:
    """``ExtraInfoUtil``: 0 normal topic, 1 retry topic, 2 retry topic v2 (``group+topic``)."""
    if topic.startswith(RETRY_PREFIX):
        return "2" if "+" in topic else "1"
    return "0"


def start_offsets(info: str | None) -> dict[tuple[str, str], str]:
    """``startOffsetInfo`` -> {(topicType, queueId): startOffset} (last field is the offset)."""
    out: dict[tuple[str, str], str] = {}
    for part in (info or "").split(";"):
        f = part.split()
        if len(f) >= 3:
            out[(f[0], f[-2])] = f[-1]
    return out


@dataclass(slots=True, frozen=True)
class Handle:
    """One popped message as a later request refers to it."""

    extra_info: str
    queue_id: str
    offset: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return handle_key(self.extra_info)


def handle_key(extra_info: str) -> tuple[str, str, str, str]:
    """(popTime, topicType, queueId, queueOffset) of an ``extraInfo`` (empty fields if malformed)."""
    f = extra_info.split()
    if len(f) < 8:
        return ("", "", "", extra_info)
    return (f[1], f[4], f[6], f[7])


def pop_handles(resp: RemotingCommand, broker_name: str) -> list[tuple[StoredMessage, Handle]]:
    """The messages of a POP_MESSAGE answer with the receipt handles a client builds for them."""
    if resp.code != c.SUCCESS or not resp.body:
        return []
    ext = resp.ext or {}
    msgs, _problems = decode_stored_messages(resp.body)
    starts = start_offsets(ext.get("startOffsetInfo"))
    pop_time, invisible, revive = ext.get("popTime", ""), ext.get("invisibleTime", ""), ext.get("reviveQid", "")
    out = []
    for m in msgs:
        tt, qid = topic_type(m.topic), str(m.queue_id)
        ck = starts.get((tt, qid), str(m.queue_offset))
        extra = " ".join((ck, pop_time, invisible, revive, tt, broker_name, qid, str(m.queue_offset)))
        out.append((m, Handle(extra, qid, str(m.queue_offset))))
    return out


def pair_messages(recorded: list[tuple[StoredMessage, Handle]],
                  replayed: list[tuple[StoredMessage, Handle]]) -> list[tuple[Handle, Handle]]:
    """(recorded handle, replayed handle) pairs by the matching rule of this module."""
    free = list(range(len(replayed)))
    pairs: dict[int, int] = {}
    for i, (m, _h) in enumerate(recorded):  # 1. same UNIQ_KEY
        uk = m.unique_key
        if not uk:
            continue
        j = next((j for j in free if replayed[j][0].unique_key == uk), None)
        if j is not None:
            pairs[i] = j
            free.remove(j)
    rest = [i for i in range(len(recorded)) if i not in pairs]
    for q in dict.fromkeys(recorded[i][0].queue_id for i in rest):  # 2a. same position within the queue
        same_q = [j for j in free if replayed[j][0].queue_id == q]
        for i, j in zip([i for i in rest if recorded[i][0].queue_id == q], same_q, strict=False):
            pairs[i] = j
            free.remove(j)
    rest = [i for i in range(len(recorded)) if i not in pairs]
    for i, j in zip(rest, list(free), strict=False):  # 2b. same position among all the unmatched
        pairs[i] = j
    return [(recorded[i][1], replayed[j][1]) for i, j in sorted(pairs.items())]


class ConsumerState:
    """Recorded -> replayed receipt handles and offsets for one (copy, loop) of the replay."""

    def __init__(self) -> None:
        self.handles: dict[tuple[str, str, str, str], Handle] = {}
        self.offsets: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        self.pending = 0  # answers that may teach a mapping, not yet in
        self.changed = asyncio.Event()
        self.popped: set[str] = set()  # every extraInfo a replayed POP / change-invisible handed out
        self.errors: list[str] = []  # answers that could not be learned from
        self.dropped: Counter = Counter()  # why parts of requests were left out (batch acks)
        self.users = 0  # sessions of this (copy, loop) running (the runner drops the state at 0)

    # -- learning --------------------------------------------------------------------
    def expect(self, code: int) -> bool:
        """Call when a request is sent; True if its answer will be learned from (call ``learn``)."""
        if code == c.POP_MESSAGE or code == c.CHANGE_MESSAGE_INVISIBLETIME or code in OFFSET_ANSWERS:
            self.pending += 1
            return True
        return False

    def learn(self, recorded_req: RemotingCommand, recorded: RemotingCommand | None,
              sent: RemotingCommand, resp: RemotingCommand | None) -> None:
        """A request sent after ``expect`` was answered (``resp``) or not (None)."""
        self.pending = max(0, self.pending - 1)
        try:
            if recorded is not None and resp is not None:
                self._learn(recorded_req, recorded, sent, resp)
        except Exception as e:  # noqa: BLE001 - an odd answer must not stall the session
            self.errors.append(f"{c.request_name(recorded_req.code)}: {type(e).__name__}: {e}")
        finally:
            self.changed.set()
            self.changed = asyncio.Event()

    def _learn(self, rreq: RemotingCommand, rec: RemotingCommand, sent: RemotingCommand,
               resp: RemotingCommand) -> None:
        code = rreq.code
        if code == c.POP_MESSAGE:
            replayed = pop_handles(resp, (sent.ext or {}).get("bname", ""))
            self.popped.update(h.extra_info for _m, h in replayed)
            recorded = pop_handles(rec, (rreq.ext or {}).get("bname", ""))
            for r, p in pair_messages(recorded, replayed):
                self.handles[r.key] = p
        elif code == c.CHANGE_MESSAGE_INVISIBLETIME:
            if rec.code != c.SUCCESS or resp.code != c.SUCCESS:
                return
            old_r, old_p = (rreq.ext or {}).get("extraInfo", ""), (sent.ext or {}).get("extraInfo", "")
            new_r, new_p = _renewed(old_r, rec), _renewed(old_p, resp)
            if new_r and new_p:
                ext = sent.ext or {}
                h = Handle(new_p, ext.get("queueId", ""), ext.get("offset", ""))
                self.handles[handle_key(new_r)] = h
                self.popped.add(new_p)
        elif code in OFFSET_ANSWERS:
            key = "nextBeginOffset" if code in (c.PULL_MESSAGE, c.LITE_PULL_MESSAGE) else "offset"
            a, b = (rec.ext or {}).get(key), (resp.ext or {}).get(key)
            q = _queue(rreq)
            if a is not None and b is not None and q is not None:
                self.offsets[q][a] = b

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no answer that could teach a mapping is outstanding."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.pending > 0:
            left = end - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return

    # -- applying --------------------------------------------------------------------
    def needs(self, recorded_req: RemotingCommand) -> bool:
        """True if this request refers to a handle with no replayed value yet."""
        if recorded_req.code == c.BATCH_ACK_MESSAGE:
            return any(k not in self.handles for _a, k in batch_ack_keys(recorded_req.body))
        if recorded_req.code not in HANDLE_CODES:
            return False
        return handle_key((recorded_req.ext or {}).get("extraInfo", "")) not in self.handles

    def apply(self, recorded_req: RemotingCommand, cmd: RemotingCommand) -> str | None:
        """Rewrite ``cmd`` (already renamed) in place; returns why it cannot be sent, or None."""
        code = recorded_req.code
        rext = recorded_req.ext or {}
        if code == c.BATCH_ACK_MESSAGE:
            return self._batch_ack(recorded_req, cmd)
        if cmd.ext is None:
            return None
        if code in HANDLE_CODES:
            h = self.handles.get(handle_key(rext.get("extraInfo", "")))
            if h is None:
                return f"{c.request_name(code)} of a message the replayed POP_MESSAGE did not return"
            cmd.ext["extraInfo"] = h.extra_info
            cmd.ext["queueId"] = h.queue_id
            cmd.ext["offset"] = h.offset
            return None
        keys = OFFSET_REQUESTS.get(code)
        q = _queue(recorded_req) if keys else None
        if keys and q is not None and q in self.offsets:
            m = self.offsets[q]
            for k in keys:
                if k in cmd.ext and rext.get(k) in m:
                    cmd.ext[k] = m[rext[k]]
        return None


    def _batch_ack(self, recorded_req: RemotingCommand, cmd: RemotingCommand) -> str | None:
        """BATCH_ACK_MESSAGE: the body's acks rebuilt from the replayed handles (module docstring)."""
        renamed = _body(cmd.body)
        if renamed is None:
            return "BATCH_ACK_MESSAGE whose body is not a batch ack"
        acks = renamed.get("acks") or []
        groups: dict[tuple, dict] = {}
        missing = 0
        for n, key in batch_ack_keys(recorded_req.body):
            h = self.handles.get(key)
            if h is None or n >= len(acks) or not isinstance(acks[n], dict):
                missing += 1
                continue
            f = h.extra_info.split()
            a = acks[n]
            grp, topic = a.get("c", a.get("consumerGroup")), a.get("t", a.get("topic"))
            g = groups.setdefault((grp, topic, f[0], f[1], f[2], f[3], f[4], f[6]), {
                "c": grp, "t": topic, "r": f[4], "so": int(f[0]), "q": int(f[6]),
                "rq": int(f[3]), "pt": int(f[1]), "it": int(f[2]), "offsets": []})
            g["offsets"].append(int(f[7]))
        if missing:
            self.dropped["BATCH_ACK_MESSAGE offset the replayed POP_MESSAGE did not return"] += missing
        if not groups:
            return "BATCH_ACK_MESSAGE of messages the replayed POP_MESSAGE did not return"
        out = []
        for g in groups.values():
            g["b"] = encode_bitset(g["so"], g.pop("offsets"))
            out.append(g)
        renamed["acks"] = out
        cmd.body = orjson.dumps(renamed)
        return None


def _body(body: bytes | None) -> dict | None:
    try:
        d = orjson.loads(body or b"")
    except orjson.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def decode_bitset(b64: str, start: int) -> list[int]:
    """``java.util.BitSet.toByteArray`` (base64) -> acked offsets ``start + i``; [] if implausible."""
    try:
        n = int.from_bytes(base64.b64decode(b64), "little")
    except (ValueError, TypeError):
        return []
    if n.bit_length() > MAX_ACK_BITS:
        return []
    return [start + i for i in range(n.bit_length()) if n >> i & 1]


def encode_bitset(start: int, offsets: list[int]) -> str:
    """The inverse of :func:`decode_bitset` (offsets below ``start`` are ignored)."""
    n = 0
    for o in offsets:
        if o >= start:
            n |= 1 << (o - start)
    return base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "little")).decode()


def _either(d: dict[str, Any], short: str, long: str) -> Any:
    """``d[short]``, else ``d[long]`` (BATCH_ACK_MESSAGE bodies use either name), else None."""
    return d.get(short, d.get(long))


def batch_ack_keys(body: bytes | None) -> list[tuple[int, tuple[str, str, str, str]]]:
    """(ack index, handle key) of every offset a BATCH_ACK_MESSAGE body acks (short or long names)."""
    d = _body(body) or {}
    out = []
    for n, a in enumerate(d.get("acks") or []):
        if not isinstance(a, dict):
            continue
        try:
            start = int(_either(a, "so", "startOffset"))
        except (TypeError, ValueError):
            continue
        bits = _either(a, "b", "bitSet")
        pt, retry, qid = (str(_either(a, s, lg)) for s, lg in (("pt", "popTime"), ("r", "retry"), ("q", "queueId")))
        for off in decode_bitset(bits, start) if isinstance(bits, str) else []:
            out.append((n, (pt, retry, qid, str(off))))
    return out


def _queue(cmd: RemotingCommand) -> tuple[str, str] | None:
    ext = cmd.ext or {}
    t, q = ext.get("topic"), ext.get("queueId")
    return (t, q) if t is not None and q is not None else None


def _renewed(extra_info: str, resp: RemotingCommand) -> str | None:
    """The handle a CHANGE_MESSAGE_INVISIBLETIME answer gives: new popTime / invisibleTime / reviveQid."""
    f = extra_info.split()
    ext = resp.ext or {}
    if len(f) < 8 or not ext.get("popTime"):
        return None
    f[1] = ext["popTime"]
    f[2] = ext.get("invisibleTime", f[2])
    f[3] = ext.get("reviveQid", f[3])
    return " ".join(f)
