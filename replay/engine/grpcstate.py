"""gRPC consumer state (``--consumers``): receipt handles staging hands out, put into the
later AckMessage / ChangeInvisibleDuration / ForwardMessageToDeadLetterQueue requests.

A captured ReceiveMessage stream delivered messages, each with a ``receipt_handle``; the
client's later requests repeat that handle. For every ReceiveMessage the recorded and the
replayed messages are paired - the replayed message with the same ``message_id`` first
(replay keeps captured ids by default), else the one at the same position among those still
unpaired - and a later request's recorded handle gets the replayed message's id and handle.
A ChangeInvisibleDuration answer carries a new handle: recorded and replayed new handles are
paired too. A request whose handle paired with nothing is not sent (it can only fail); an
AckMessage loses just its unpaired entries. One state per session copy (gRPC clients ack on
the connection they received on).
"""
from __future__ import annotations

from typing import Any

from google.protobuf.message import Message as PbMessage

from dissectors.grpc.call import GrpcMessage

HANDLE_METHODS = frozenset({"AckMessage", "ChangeInvisibleDuration", "ForwardMessageToDeadLetterQueue"})


def _dyn(m: PbMessage) -> Any:
    """A message of a schema-built class, as Any: its fields are unknown to the type checker."""
    return m


def delivered(resp: GrpcMessage | None) -> list[tuple[str, str]]:
    """(message id, receipt handle) of every message a ReceiveMessage answer delivered."""
    out = []
    for p in resp.messages if resp is not None else ():
        m = p.message
        if m is not None and m.WhichOneof("content") == "message":
            sp = _dyn(m).message.system_properties
            out.append((sp.message_id, sp.receipt_handle))
    return out


class GrpcConsumerState:
    """Recorded receipt handle -> (replayed message id, replayed receipt handle)."""

    def __init__(self) -> None:
        self.handles: dict[str, tuple[str, str]] = {}

    def learn(self, method: str, recorded: GrpcMessage | None, replayed: GrpcMessage, sent: list) -> None:
        """Pair what a recorded answer handed out with what the replayed one did (``sent``:
        the replayed request messages)."""
        if method == "ReceiveMessage":
            self._received(delivered(recorded), delivered(replayed))
        elif method == "ChangeInvisibleDuration":
            a, b = _new_handle(recorded), _new_handle(replayed)
            if a and b and sent:
                self.handles[a] = (sent[0].message_id, b)

    def _received(self, rec: list[tuple[str, str]], got: list[tuple[str, str]]) -> None:
        free = list(got)
        rest = []
        for mid, handle in rec:
            hit = next((g for g in free if g[0] == mid), None)
            if hit is None:
                rest.append(handle)
                continue
            free.remove(hit)
            self.handles[handle] = hit
        for handle, hit in zip(rest, free, strict=False):  # handles beyond the free ones stay unmapped
            self.handles[handle] = hit

    def apply(self, method: str, out: list) -> str | None:
        """Rewrite the handles of the request messages ``out`` in place; a reason when the
        request cannot be sent."""
        if method not in HANDLE_METHODS:
            return None
        for m in out:
            if method == "AckMessage":
                keep = []
                for e in m.entries:
                    got = self.handles.get(e.receipt_handle)
                    if got is not None:
                        e.message_id, e.receipt_handle = got[0] or e.message_id, got[1]
                        keep.append(e)
                if len(keep) != len(m.entries):
                    kept = [type(e)() for e in keep]
                    for k, e in zip(kept, keep, strict=True):
                        k.CopyFrom(e)
                    del m.entries[:]
                    m.entries.extend(kept)
                if not keep:
                    return f"{method} of messages staging did not deliver"
            else:
                got = self.handles.get(m.receipt_handle)
                if got is None:
                    return f"{method} of a message staging did not deliver"
                m.message_id, m.receipt_handle = got[0] or m.message_id, got[1]
        return None


def _new_handle(resp: GrpcMessage | None) -> str | None:
    for p in resp.messages if resp is not None else ():
        handle = _dyn(p.message).receipt_handle if p.message is not None else None
        if handle:
            return handle
    return None
