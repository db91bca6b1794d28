"""Meaning of extFields (custom headers): long names, topic/group/queue lookup,
field-by-field descriptions and redaction of ACL secrets."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone

from . import codes as c
from .command import FLAG_RESPONSE, RemotingCommand

# ------------------------------------------------------------------ send V2 keys

SEND_V2_KEYS: dict[str, str] = {
    "a": "producerGroup",
    "b": "topic",
    "c": "defaultTopic",
    "d": "defaultTopicQueueNums",
    "e": "queueId",
    "f": "sysFlag",
    "g": "bornTimestamp",
    "h": "flag",
    "i": "properties",
    "j": "reconsumeTimes",
    "k": "unitMode",
    "l": "maxReconsumeTimes",
    "m": "batch",
    "n": "bname",
}
"""SendMessageRequestHeaderV2 one-letter key -> SendMessageRequestHeader field name."""

_V2_CODES = c.SEND_V2_REQUESTS


def _is_v2_request(cmd: RemotingCommand) -> bool:
    return not cmd.flag & FLAG_RESPONSE and cmd.code in _V2_CODES


def long_ext(cmd: RemotingCommand) -> dict[str, str]:
    """extFields with long names for SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE /
    SEND_REPLY_MESSAGE_V2 requests (order kept; a short key whose long name is already
    present keeps its short name so nothing is lost). Other commands: a copy as is."""
    ext = cmd.ext
    if not ext:
        return {}
    if not _is_v2_request(cmd):
        return dict(ext)
    out: dict[str, str] = {}
    for k, v in ext.items():
        name = SEND_V2_KEYS.get(k, k)
        if name in out or (name != k and name in ext):
            name = k
        out[name] = v
    return out


# ------------------------------------------------------------------ cheap lookups

_GROUP_KEYS = ("consumerGroup", "producerGroup", "group")


def topic_of(cmd: RemotingCommand) -> str | None:
    """The topic the command names (V2 ``b`` or ``topic``), else None."""
    return topic_in(cmd.code, cmd.flag, cmd.ext)


def topic_in(code: int, flag: int, ext: dict[str, str] | None) -> str | None:
    """:func:`topic_of` from a command's raw fields."""
    if not ext:
        return None
    if code in _V2_CODES and not flag & FLAG_RESPONSE:
        t = ext.get("b")
        if t is not None:
            return t
    return ext.get("topic")


def group_of(cmd: RemotingCommand) -> str | None:
    """The producer or consumer group the command carries (V2 ``a``, ``consumerGroup``,
    ``producerGroup``, ``group``), else None."""
    return group_in(cmd.code, cmd.flag, cmd.ext)


def group_in(code: int, flag: int, ext: dict[str, str] | None) -> str | None:
    """:func:`group_of` from a command's raw fields."""
    if not ext:
        return None
    if code in _V2_CODES and not flag & FLAG_RESPONSE:
        g = ext.get("a")
        if g is not None:
            return g
    for k in _GROUP_KEYS:
        g = ext.get(k)
        if g is not None:
            return g
    return None


def topic_group_in(code: int, flag: int, ext: dict[str, str] | None) -> tuple[str | None, str | None]:
    """(:func:`topic_in`, :func:`group_in`) in one call."""
    if not ext:
        return None, None
    if code in _V2_CODES and not flag & FLAG_RESPONSE:
        t = ext.get("b")
        g = ext.get("a")
        if t is None:
            t = ext.get("topic")
        if g is not None:
            return t, g
    else:
        t = ext.get("topic")
    for k in _GROUP_KEYS:
        g = ext.get(k)
        if g is not None:
            return t, g
    return t, None


def queue_id_of(cmd: RemotingCommand) -> int | None:
    """The queue id (V2 ``e`` or ``queueId``) as int; None when absent or not a number."""
    ext = cmd.ext
    if not ext:
        return None
    q = None
    if cmd.code in _V2_CODES and not cmd.flag & FLAG_RESPONSE:
        q = ext.get("e")
    if q is None:
        q = ext.get("queueId")
        if q is None:
            return None
    try:
        return int(q)
    except ValueError:
        return None


# ------------------------------------------------------------------ redaction

SECRET_KEYS: frozenset[str] = frozenset({"accesskey", "signature", "securitytoken", "authorization"})
"""Lower-cased extFields keys whose values are secrets (ACL 1.0 signing, gRPC auth)."""

REDACTED = "<redacted>"


def is_secret(key: str) -> bool:
    """True when ``key`` names a secret (case-insensitive)."""
    return key.lower() in SECRET_KEYS


def redact_ext(ext: dict[str, str] | None, enabled: bool = True) -> dict[str, str] | None:
    """Copy of ``ext`` with secret values replaced by ``<redacted>`` (keys kept)."""
    if ext is None:
        return None
    if not enabled:
        return dict(ext)
    return {k: (REDACTED if k.lower() in SECRET_KEYS else v) for k, v in ext.items()}


def redacted_command(cmd: RemotingCommand) -> RemotingCommand:
    """Copy of ``cmd`` whose extFields are redacted."""
    return dataclasses.replace(cmd, ext=redact_ext(cmd.ext))


# ------------------------------------------------------------------ value meanings

def _ms_time(v: str) -> str:
    try:
        ms = int(v)
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return ""


def _bits(v: str, names: tuple[tuple[int, str], ...]) -> str:
    try:
        n = int(v)
    except ValueError:
        return "not a number"
    found = [name for mask, name in names if n & mask]
    rest = n & ~sum(mask for mask, _ in names)
    if rest:
        found.append(hex(rest))
    return "|".join(found) if found else "none"


PULL_SYS_FLAGS = ((0x1, "COMMIT_OFFSET"), (0x2, "SUSPEND"), (0x4, "SUBSCRIPTION"),
                  (0x8, "CLASS_FILTER"), (0x10, "LITE_PULL"))
"""PullSysFlag bits."""

PERM_BITS = ((8, "PRIORITY"), (4, "READ"), (2, "WRITE"), (1, "INHERIT"))

_TRANSACTION_TYPES = {0: "TRANSACTION_NOT_TYPE", 4: "PREPARED", 8: "COMMIT", 12: "ROLLBACK"}
_COMPRESSION = {0: "ZLIB", 1: "LZ4", 2: "ZSTD", 3: "ZLIB"}


def message_sys_flag(v: str) -> str:
    """MessageSysFlag bits in words (compression, tags, transaction type, IPv6, batch)."""
    try:
        n = int(v)
    except ValueError:
        return "not a number"
    parts = []
    if n & 0x1:
        parts.append("COMPRESSED(" + _COMPRESSION.get((n >> 8) & 0x7, "?") + ")")
    if n & 0x2:
        parts.append("MULTI_TAGS")
    parts.append(_TRANSACTION_TYPES[n & 0xC])
    for mask, name in ((0x10, "BORNHOST_V6"), (0x20, "STOREHOST_V6"), (0x40, "NEED_UNWRAP"),
                       (0x80, "INNER_BATCH")):
        if n & mask:
            parts.append(name)
    return "|".join(parts)


def _commit_or_rollback(v: str) -> str:
    try:
        n = int(v)
    except ValueError:
        return "not a number"
    return {0: "TRANSACTION_NOT_TYPE (unknown)", 8: "COMMIT", 12: "ROLLBACK"}.get(n, f"unexpected {n}")


_RETRY = {"0": "normal topic", "1": "V1 pop retry topic", "2": "V2 pop retry topic"}


def _offset_info(kind: str) -> Callable[[str], str]:
    def explain(v: str) -> str:
        out = []
        for entry in v.split(";"):
            if not entry:
                continue
            f = entry.split(" ")
            if len(f) != 3:
                out.append(f"unparsed {entry!r}")
                continue
            retry, queue, what = f
            where = _RETRY.get(retry, f"retry {retry}")
            if queue.startswith("qo") and "%" in queue:
                qid, qoff = queue[2:].split("%", 1)
                queue = f"{qid} at offset {qoff}"
            out.append(f"{where} queue {queue}: {kind} {what}")
        return "; ".join(out)
    return explain


_EXTRA_INFO_FIELDS = ("ckQueueOffset", "popTime", "invisibleTime", "reviveQid", "retry",
                      "brokerName", "queueId", "queueOffset")


def _extra_info(v: str) -> str:
    f = v.split(" ")
    if len(f) < len(_EXTRA_INFO_FIELDS):
        return "unparsed"
    named = [f"{k}={x}" for k, x in zip(_EXTRA_INFO_FIELDS, f, strict=False)]  # f may be longer
    extra = f[len(_EXTRA_INFO_FIELDS):]
    if extra:
        named.append("extra=" + " ".join(extra))
    return ", ".join(named)


def _properties(v: str) -> str:
    shown = []
    for piece in v.split("\x02"):
        i = piece.find("\x01")
        if 0 < i < len(piece) - 1:
            shown.append(f"{piece[:i]}={piece[i + 1:]}")
    return "; ".join(shown) if shown else "none parsed"


def _choice(table: dict[str, str]) -> Callable[[str], str]:
    return lambda v: table.get(v, "")


_INTERPRET: dict[str, Callable[[str], str]] = {
    "bornTimestamp": _ms_time, "bornTime": _ms_time, "popTime": _ms_time,
    "beginTimestamp": _ms_time, "endTimestamp": _ms_time, "timestamp": _ms_time,
    "indexLastUpdateTimestamp": _ms_time,
    "commitOrRollback": _commit_or_rollback,
    "startOffsetInfo": _offset_info("start offset"),
    "msgOffsetInfo": _offset_info("message offsets"),
    "orderCountInfo": _offset_info("consume count"),
    "extraInfo": _extra_info,
    "properties": _properties,
    "initMode": _choice({"0": "MIN (start from the minimum offset)", "1": "MAX (start from the maximum offset)"}),
    "brokerId": _choice({"0": "master"}),
    "suggestWhichBrokerId": _choice({"0": "master"}),
    "reviveQid": _choice({"999": "orderly pop revive queue"}),
    "perm": lambda v: _bits(v, PERM_BITS),
}

# ------------------------------------------------------------------ field tables

INHERITED_FIELDS: dict[str, str] = {
    "ns": "namespace (5.x RpcRequestHeader)",
    "nsd": "namespaced (5.x RpcRequestHeader)",
    "bname": "target broker name",
    "oway": "one-way (5.x RpcRequestHeader)",
    "lo": "logical queue (5.x TopicRequestHeader)",
}

EXTRA_FIELDS: dict[str, str] = {
    "MSG_REGION": "broker region (regionId)",
    "TRACE_ON": "broker message trace switch",
    "IS_SUPPORT_HEART_BEAT_V2": "broker supports heartbeat V2 (5.1.3+)",
    "IS_SUB_CHANGE": "broker saw a subscription change (heartbeat V2)",
    "_UNIQUE_KEY_QUERY": "query by UNIQ_KEY (client message id)",
    "AccessKey": "ACL 1.0 access key",
    "SecurityToken": "ACL 1.0 security token",
    "Signature": "ACL 1.0 HmacSHA1 signature of the sorted extFields values and the body",
    "__ZONE_MODE": "zone route filtering",
    "__ZONE_NAME": "zone name",
}

_COMMON: dict[str, str] = {
    "topic": "topic",
    "consumerGroup": "consumer group",
    "producerGroup": "producer group",
    "group": "group",
    "queueId": "queue id",
    "clientId": "client id",
    "clientID": "client id (<ip>@<instance>)",
}

SEND_REQUEST_FIELDS: dict[str, str] = {
    "producerGroup": "producer group",
    "topic": "topic",
    "defaultTopic": "auto-create template topic (normally TBW102)",
    "defaultTopicQueueNums": "queues to create the topic with",
    "queueId": "target queue",
    "sysFlag": "MessageSysFlag bits",
    "bornTimestamp": "client timestamp (ms)",
    "flag": "user Message.flag",
    "properties": "message properties string",
    "reconsumeTimes": "retry count",
    "unitMode": "unit mode",
    "maxReconsumeTimes": "maximum retries (retry topics)",
    "batch": "batch send",
    "bname": "target broker name",
}

SEND_RESPONSE_FIELDS: dict[str, str] = {
    "msgId": "offset message id(s) (batch: joined with ',')",
    "queueId": "queue actually used",
    "queueOffset": "logical queue offset of the (first) message",
    "transactionId": "transaction id (5.x: the message's UNIQ_KEY)",
    "batchUniqId": "inner-batch unique id",
    "recallHandle": "recall handle (5.3.2+, delay messages)",
}

PULL_REQUEST_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group",
    "topic": "topic",
    "queueId": "queue id",
    "queueOffset": "offset to read from",
    "maxMsgNums": "batch size",
    "sysFlag": "PullSysFlag bits",
    "commitOffset": "consumer's committed offset (used with COMMIT_OFFSET)",
    "suspendTimeoutMillis": "long-poll hold time (ms)",
    "subscription": "subscription expression",
    "subVersion": "subscription version (ms timestamp)",
    "expressionType": "TAG or SQL92",
    "maxMsgBytes": "maximum bytes to return",
    "requestSource": "request source (proxy)",
    "proxyFrowardClientId": "client id forwarded by the proxy",
}

PULL_RESPONSE_FIELDS: dict[str, str] = {
    "suggestWhichBrokerId": "broker id to pull from next (0 = master)",
    "nextBeginOffset": "next offset to pull from",
    "minOffset": "queue minimum offset",
    "maxOffset": "queue maximum offset",
    "offsetDelta": "offset delta (static topics)",
    "topicSysFlag": "topic sysFlag",
    "groupSysFlag": "group sysFlag",
    "forbiddenType": "forbidden type",
}

POP_REQUEST_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group",
    "topic": "topic",
    "queueId": "queue id (-1 = any queue the broker chooses)",
    "maxMsgNums": "maximum messages",
    "invisibleTime": "ms the popped messages stay invisible",
    "pollTime": "long-poll time (ms)",
    "bornTime": "client timestamp (ms)",
    "initMode": "ConsumeInitMode",
    "expType": "TAG or SQL92",
    "exp": "filter expression",
    "order": "orderly pop",
    "attemptId": "attempt id",
}

POP_RESPONSE_FIELDS: dict[str, str] = {
    "popTime": "broker timestamp of this pop (checkpoint time)",
    "invisibleTime": "invisible time (ms)",
    "reviveQid": "revive queue",
    "restNum": "messages left",
    "startOffsetInfo": "per queue '<retry> <queueId> <startOffset>' joined with ';'",
    "msgOffsetInfo": "per queue '<retry> <queueId> <off1>,<off2>,...' joined with ';'",
    "orderCountInfo": "orderly pop consume counts",
}

NOTIFICATION_REQUEST_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group", "topic": "topic", "queueId": "queue id",
    "pollTime": "long-poll time (ms)", "bornTime": "client timestamp (ms)",
    "order": "orderly", "attemptId": "attempt id",
}
NOTIFICATION_RESPONSE_FIELDS: dict[str, str] = {
    "hasMsg": "messages are available", "pollingFull": "broker polling queue is full",
}
POLLING_INFO_REQUEST_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group", "topic": "topic", "queueId": "queue id",
}
POLLING_INFO_RESPONSE_FIELDS: dict[str, str] = {"pollingNum": "requests polling"}
PEEK_REQUEST_FIELDS: dict[str, str] = {
    "topic": "topic", "queueId": "queue id", "maxMsgNums": "maximum messages",
    "consumerGroup": "consumer group",
}

ACK_REQUEST_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group",
    "topic": "real topic (retry topic when retry flag != 0)",
    "queueId": "queue id",
    "extraInfo": "POP_CK receipt handle",
    "offset": "queue offset being acked",
}

CHANGE_INVISIBLE_REQUEST_FIELDS: dict[str, str] = {
    **ACK_REQUEST_FIELDS,
    "offset": "queue offset of the message",
    "invisibleTime": "new invisible time (ms)",
}
CHANGE_INVISIBLE_RESPONSE_FIELDS: dict[str, str] = {
    "popTime": "new pop (checkpoint) time",
    "invisibleTime": "invisible time (ms)",
    "reviveQid": "revive queue",
}

QUERY_CONSUMER_OFFSET_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group", "topic": "topic", "queueId": "queue id",
    "setZeroIfNotFound": "answer 0 instead of QUERY_NOT_FOUND",
}
UPDATE_CONSUMER_OFFSET_FIELDS: dict[str, str] = {
    "consumerGroup": "consumer group", "topic": "topic", "queueId": "queue id",
    "commitOffset": "offset to commit",
}
OFFSET_RESPONSE_FIELDS: dict[str, str] = {"offset": "offset", "timestamp": "store timestamp"}

ROUTE_REQUEST_FIELDS: dict[str, str] = {
    "topic": "topic",
    "acceptStandardJsonOnly": "ask for standard JSON route bodies",
}
CONSUMER_LIST_FIELDS: dict[str, str] = {"consumerGroup": "consumer group"}

END_TRANSACTION_FIELDS: dict[str, str] = {
    "topic": "topic",
    "producerGroup": "producer group",
    "tranStateTableOffset": "queue offset of the half message",
    "commitLogOffset": "commit-log offset of the half message",
    "commitOrRollback": "transaction decision",
    "fromTransactionCheck": "answer to a transaction check",
    "msgId": "UNIQ_KEY of the half message",
    "transactionId": "transaction id",
}
CHECK_TRANSACTION_FIELDS: dict[str, str] = {
    "topic": "topic",
    "tranStateTableOffset": "queue offset of the half message",
    "commitLogOffset": "commit-log offset of the half message",
    "msgId": "UNIQ_KEY of the half message",
    "transactionId": "transaction id",
    "offsetMsgId": "offset message id",
}
UNREGISTER_CLIENT_FIELDS: dict[str, str] = {
    "clientID": "client id (<ip>@<instance>)",
    "producerGroup": "producer group",
    "consumerGroup": "consumer group",
}
REGISTER_BROKER_FIELDS: dict[str, str] = {
    "brokerName": "broker name",
    "brokerAddr": "broker address ip:port",
    "clusterName": "cluster name",
    "haServerAddr": "HA address ip:haPort",
    "brokerId": "broker id (0 = master)",
    "heartbeatTimeoutMillis": "heartbeat timeout (ms)",
    "enableActingMaster": "acting master enabled",
    "compressed": "body is the compressed (zlib) form",
    "bodyCrc32": "crc32 of the body (0 = not checked)",
}
REGISTER_BROKER_RESPONSE_FIELDS: dict[str, str] = {
    "haServerAddr": "master HA address", "masterAddr": "master address",
}
QUERY_MESSAGE_FIELDS: dict[str, str] = {
    "topic": "topic", "key": "message key", "maxNum": "maximum messages",
    "beginTimestamp": "range start (ms)", "endTimestamp": "range end (ms)",
}
QUERY_MESSAGE_RESPONSE_FIELDS: dict[str, str] = {
    "indexLastUpdateTimestamp": "index last update (ms)",
    "indexLastUpdatePhyoffset": "index last update commit-log offset",
}
VIEW_MESSAGE_FIELDS: dict[str, str] = {"offset": "commit-log offset", "topic": "topic"}
SEND_BACK_FIELDS: dict[str, str] = {
    "offset": "commit-log offset of the message", "group": "consumer group",
    "delayLevel": "delay level", "originMsgId": "original message id",
    "originTopic": "original topic", "unitMode": "unit mode",
    "maxReconsumeTimes": "maximum retries",
}
QUEUE_OFFSET_FIELDS: dict[str, str] = {
    "topic": "topic", "queueId": "queue id", "committed": "only committed offsets (5.x)",
    "timestamp": "timestamp to search (ms)", "boundaryType": "LOWER or UPPER",
}

REQUEST_FIELDS: dict[int, dict[str, str]] = {
    c.SEND_MESSAGE: SEND_REQUEST_FIELDS,
    c.SEND_MESSAGE_V2: SEND_REQUEST_FIELDS,
    c.SEND_BATCH_MESSAGE: SEND_REQUEST_FIELDS,
    c.SEND_REPLY_MESSAGE: SEND_REQUEST_FIELDS,
    c.SEND_REPLY_MESSAGE_V2: SEND_REQUEST_FIELDS,
    c.PULL_MESSAGE: PULL_REQUEST_FIELDS,
    c.LITE_PULL_MESSAGE: PULL_REQUEST_FIELDS,
    c.POP_MESSAGE: POP_REQUEST_FIELDS,
    c.PEEK_MESSAGE: PEEK_REQUEST_FIELDS,
    c.NOTIFICATION: NOTIFICATION_REQUEST_FIELDS,
    c.POLLING_INFO: POLLING_INFO_REQUEST_FIELDS,
    c.ACK_MESSAGE: ACK_REQUEST_FIELDS,
    c.CHANGE_MESSAGE_INVISIBLETIME: CHANGE_INVISIBLE_REQUEST_FIELDS,
    c.QUERY_CONSUMER_OFFSET: QUERY_CONSUMER_OFFSET_FIELDS,
    c.UPDATE_CONSUMER_OFFSET: UPDATE_CONSUMER_OFFSET_FIELDS,
    c.GET_ROUTEINFO_BY_TOPIC: ROUTE_REQUEST_FIELDS,
    c.GET_CONSUMER_LIST_BY_GROUP: CONSUMER_LIST_FIELDS,
    c.NOTIFY_CONSUMER_IDS_CHANGED: CONSUMER_LIST_FIELDS,
    c.END_TRANSACTION: END_TRANSACTION_FIELDS,
    c.CHECK_TRANSACTION_STATE: CHECK_TRANSACTION_FIELDS,
    c.UNREGISTER_CLIENT: UNREGISTER_CLIENT_FIELDS,
    c.REGISTER_BROKER: REGISTER_BROKER_FIELDS,
    c.QUERY_MESSAGE: QUERY_MESSAGE_FIELDS,
    c.VIEW_MESSAGE_BY_ID: VIEW_MESSAGE_FIELDS,
    c.CONSUMER_SEND_MSG_BACK: SEND_BACK_FIELDS,
    c.SEARCH_OFFSET_BY_TIMESTAMP: QUEUE_OFFSET_FIELDS,
    c.GET_MAX_OFFSET: QUEUE_OFFSET_FIELDS,
    c.GET_MIN_OFFSET: QUEUE_OFFSET_FIELDS,
    c.GET_EARLIEST_MSG_STORETIME: QUEUE_OFFSET_FIELDS,
}
"""Request code -> {long field name: meaning}."""

RESPONSE_FIELDS: dict[int, dict[str, str]] = {
    **{code: SEND_RESPONSE_FIELDS for code in c.SEND_REQUESTS},
    c.PULL_MESSAGE: PULL_RESPONSE_FIELDS,
    c.LITE_PULL_MESSAGE: PULL_RESPONSE_FIELDS,
    c.POP_MESSAGE: POP_RESPONSE_FIELDS,
    c.PEEK_MESSAGE: POP_RESPONSE_FIELDS,
    c.NOTIFICATION: NOTIFICATION_RESPONSE_FIELDS,
    c.POLLING_INFO: POLLING_INFO_RESPONSE_FIELDS,
    c.CHANGE_MESSAGE_INVISIBLETIME: CHANGE_INVISIBLE_RESPONSE_FIELDS,
    c.QUERY_CONSUMER_OFFSET: OFFSET_RESPONSE_FIELDS,
    c.SEARCH_OFFSET_BY_TIMESTAMP: OFFSET_RESPONSE_FIELDS,
    c.GET_MAX_OFFSET: OFFSET_RESPONSE_FIELDS,
    c.GET_MIN_OFFSET: OFFSET_RESPONSE_FIELDS,
    c.GET_EARLIEST_MSG_STORETIME: OFFSET_RESPONSE_FIELDS,
    c.REGISTER_BROKER: REGISTER_BROKER_RESPONSE_FIELDS,
    c.QUERY_MESSAGE: QUERY_MESSAGE_RESPONSE_FIELDS,
}
"""Request code -> {response field: meaning} (a response is described by its request)."""

_ANY_RESPONSE: dict[str, str] = {}
for _t in (OFFSET_RESPONSE_FIELDS, QUERY_MESSAGE_RESPONSE_FIELDS, REGISTER_BROKER_RESPONSE_FIELDS,
           POLLING_INFO_RESPONSE_FIELDS, NOTIFICATION_RESPONSE_FIELDS, PULL_RESPONSE_FIELDS,
           POP_RESPONSE_FIELDS, SEND_RESPONSE_FIELDS):
    _ANY_RESPONSE.update(_t)
del _t


def _meaning_table(cmd: RemotingCommand, request_code: int | None) -> dict[str, str]:
    if cmd.flag & FLAG_RESPONSE:
        if request_code is None:
            return _ANY_RESPONSE
        return RESPONSE_FIELDS.get(request_code, _ANY_RESPONSE)
    return REQUEST_FIELDS.get(cmd.code, _COMMON)


def describe(cmd: RemotingCommand, request_code: int | None = None,
             redact: bool = True) -> list[tuple[str, str, str]]:
    """(long field name, value, meaning) for every extFields entry, in wire order.

    For a response pass the matched request's code as ``request_code`` for exact
    meanings (without it, meanings of all known response headers are used). Unknown
    keys get an empty meaning; secret values are ``<redacted>`` unless ``redact=False``.
    """
    ext = cmd.ext
    if not ext:
        return []
    is_response = bool(cmd.flag & FLAG_RESPONSE)
    table = _meaning_table(cmd, request_code)
    v2 = not is_response and cmd.code in _V2_CODES
    family = request_code if is_response else cmd.code
    out: list[tuple[str, str, str]] = []
    for key, value in ext.items():
        name = SEND_V2_KEYS.get(key, key) if v2 else key
        if redact and key.lower() in SECRET_KEYS:
            out.append((name, REDACTED, EXTRA_FIELDS.get(key, "secret")))
            continue
        meaning = (table.get(name) or INHERITED_FIELDS.get(name) or EXTRA_FIELDS.get(name)
                   or _COMMON.get(name) or "")
        detail = _interpret(name, value, family)
        if detail:
            meaning = f"{meaning}: {detail}" if meaning else detail
        if v2 and name != key:
            meaning = f"{meaning} [V2 key {key}]"
        out.append((name, value, meaning))
    return out


def _interpret(name: str, value: str, family: int | None) -> str:
    if name == "sysFlag":
        if family in c.PULL_REQUESTS:
            return _bits(value, PULL_SYS_FLAGS)
        if family in c.SEND_REQUESTS:
            return message_sys_flag(value)
        return ""
    if name == "queueId" and value == "-1" and family in c.POP_REQUESTS:
        return "any queue"
    fn = _INTERPRET.get(name)
    if fn is None:
        return ""
    try:
        return fn(value)
    except Exception:  # noqa: BLE001 - a meaning must never break output
        return ""
