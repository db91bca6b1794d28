"""Pop receipt handles (remoting ``extraInfo`` / ``POP_CK``, the proxy's gRPC receipt handle):
the fields both protocols' lag facts read from them."""
from __future__ import annotations

_RETRY = "%RETRY%"


def _int(v: str) -> int | None:
    try:
        return int(v)
    except ValueError:
        return None


def retry_topic(group: str, topic: str, retry: str | None) -> str:
    """The topic a pop handle's retry flag means: ``1`` the V1 pop retry topic
    ``%RETRY%<group>_<topic>``, ``2`` the V2 one ``%RETRY%<group>+<topic>``, else ``topic``."""
    if retry == "1":
        return f"{_RETRY}{group}_{topic}"
    if retry == "2":
        return f"{_RETRY}{group}+{topic}"
    return topic


def handle_fields(handle: str) -> tuple[str | None, str | None, int | None, int | None]:
    """(retry flag, broker name, queue id, queue offset) of a pop extraInfo / receipt handle
    (``ckQueueOffset popTime invisibleTime reviveQid retry brokerName queueId queueOffset …``)."""
    f = handle.split(" ")
    if len(f) < 8:
        return None, None, None, None
    return f[4], f[5] or None, _int(f[6]), _int(f[7])
