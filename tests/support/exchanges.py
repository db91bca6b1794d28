"""Reaching into exchanges the test knows are complete: the request (or response) command of
an exchange, asserted present, for expressions where a narrowing ``assert`` cannot go
(comprehensions)."""
from __future__ import annotations

from typing import Any

from rmqsniff.model import Exchange


def request_of(ex: Exchange) -> Any:
    """The request's decoded command (a RemotingCommand or a gRPC call); asserted present."""
    assert ex.request is not None, f"exchange {ex.index} has no request"
    return ex.request.command


def response_of(ex: Exchange) -> Any:
    """The response's decoded command; asserted present."""
    assert ex.response is not None, f"exchange {ex.index} has no response"
    return ex.response.command
