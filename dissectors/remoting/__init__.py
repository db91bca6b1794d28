"""RocketMQ remoting protocol: frame codec, code tables and header meaning."""
from __future__ import annotations

from . import codes, headers
from .command import JSON, ROCKETMQ, RemotingCommand
from .frame import FrameError, decode_frame, encode
from .stream import DecodeError, Frame, Resync, StreamDecoder

__all__ = [
    "RemotingCommand", "encode", "decode_frame", "StreamDecoder", "Frame", "DecodeError",
    "Resync", "FrameError", "codes", "headers", "JSON", "ROCKETMQ",
]
