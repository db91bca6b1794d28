"""Message journeys: every hop of one message (sent, stored, delivered, acked, retried,
dead-lettered, transaction ends, message-trace records) joined across connections,
protocols and captures.  See :mod:`.engine`."""
from __future__ import annotations

from .engine import BYTES_PER_OPEN_JOURNEY, MAX_OPEN_JOURNEYS, Hop, Journey, JourneyEngine, journey_to_dict

__all__ = ["BYTES_PER_OPEN_JOURNEY", "MAX_OPEN_JOURNEYS", "Hop", "Journey", "JourneyEngine", "journey_to_dict"]
