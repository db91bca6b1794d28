"""RocketMQ remoting protocol: frame codec, code tables and header meaning."""
from __future__ import annotations

from . import codes, headers
from .codec import (
    DecodeError,
    Frame,
    FrameError,
    Resync,
    StreamDecoder,
    decode_frame,
    encode,
)
from .command import JSON, ROCKETMQ, RemotingCommand

__all__ = [
    "RemotingCommand", "encode", "decode_frame", "StreamDecoder", "Frame", "DecodeError",
    "Resync", "FrameError", "codes", "headers", "JSON", "ROCKETMQ",
]
