"""The remoting frame codec's former module, kept so that ``from dissectors.remoting.codec
import ...`` lines elsewhere keep working: it re-exports the public names of
:mod:`dissectors.remoting.frame` (one frame: ``encode``, ``decode_frame``) and
:mod:`dissectors.remoting.stream` (``StreamDecoder`` and its events). New code imports
from those modules."""
from __future__ import annotations

from .frame import DEFAULT_MAX_FRAME, JSON, ROCKETMQ, FrameError, decode_frame, encode
from .stream import DecodeError, Event, Frame, Peeked, Resync, StreamDecoder

__all__ = [
    "JSON", "ROCKETMQ", "DEFAULT_MAX_FRAME", "FrameError", "Frame", "DecodeError", "Resync",
    "Event", "encode", "decode_frame", "StreamDecoder", "Peeked",
]
