"""RocketMQ 5.x gRPC (``apache.rocketmq.v2.MessagingService`` over HTTP/2), sans-I/O.

``GrpcConnection`` takes both directions' bytes and returns call events;
``frames`` splits HTTP/2 frames, ``hpack_decoder`` is a HPACK decoder that survives a
capture starting mid-connection, ``schema`` is the protobuf schema, ``messages``
parses bodies and infers lost methods, ``call`` holds the decoded calls.
"""
from __future__ import annotations

from .call import GrpcCall, GrpcMessage, GrpcPayload, redact_value, response_code_name
from .connection import CallEnded, CallStarted, Encrypted, GrpcConnection, Problem, Resynced, response_code
from .hpack_decoder import UNKNOWN, HeaderBlock, TolerantDecoder
from .schema import BY_NAME, BY_PATH, RPCS, Rpc

__all__ = [
    "GrpcConnection", "CallStarted", "CallEnded", "Problem", "Resynced", "Encrypted", "GrpcCall", "GrpcMessage",
    "GrpcPayload", "TolerantDecoder", "HeaderBlock", "UNKNOWN", "RPCS", "Rpc", "BY_NAME", "BY_PATH",
    "redact_value", "response_code_name", "response_code",
]
