"""gRPC's answers to ``rmqsniff doctor``: causes from the RocketMQ ``Status`` codes of answers,
kinds from the method, the client message ids of SendMessage (heartbeat subscriptions,
route addresses and transactions are not read from gRPC yet)."""
from __future__ import annotations

from dissectors.grpc import schema

from ...model import Exchange
from .. import facts as F
from .classify import CLASSIFIER
from .messages import carried

_B = schema.BY_NAME
_KINDS = {_B["SendMessage"].code: F.SEND, _B["QueryRoute"].code: F.ROUTE, _B["Heartbeat"].code: F.HEARTBEAT,
          _B["EndTransaction"].code: F.TX_END}
_LONG_POLL = frozenset({_B["ReceiveMessage"].code, _B["PullMessage"].code})
_CAUSES = {42900: F.BUSY, 40402: F.TOPIC_MISSING, 40300: F.NO_PERMISSION, 40100: F.NO_PERMISSION,
           41300: F.MESSAGE_ILLEGAL, 41301: F.MESSAGE_ILLEGAL, 43101: F.MESSAGE_ILLEGAL, 40016: F.MESSAGE_ILLEGAL,
           50401: F.FLUSH_TIMEOUT, 50402: F.FLUSH_TIMEOUT, 50002: F.FLUSH_TIMEOUT}


def doctor_facts(ex: Exchange) -> F.DoctorFacts | None:
    if ex.request is None:
        return None
    req = ex.request.command
    code = req.code
    f = F.DoctorFacts(_KINDS.get(code, F.OTHER), _CAUSES.get(ex.response.command.code) if ex.response else None,
                      CLASSIFIER.topic_of(req), CLASSIFIER.group_of(req))
    f.long_poll = code in _LONG_POLL
    if f.kind is F.SEND:
        f.unique_keys = carried(ex)[2]
    return f
