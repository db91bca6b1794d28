"""The TUI's journey view (``t``) over the committed real captures, driven with textual's
pilot; what it must show comes from the journey engine run here on the pipeline's exchanges
and from the clients' own record (``*.truth.json``)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from rmqsniff.pipeline import analyze
from rmqsniff.protocols import protocol_of
from tests.support.captures import CAPTURES
from tests.support.pilot import until

pytest.importorskip("textual")

from textual.widgets import Log  # noqa: E402

from rmqsniff.tui import RmqSniffApp  # noqa: E402
from rmqsniff.tui.screens import JourneyScreen  # noqa: E402


def _run(capture: Path, pos: int, check) -> None:
    async def main() -> None:
        app = RmqSniffApp([str(capture)])
        async with app.run_test(size=(200, 50)) as pilot:
            await until(pilot, lambda: not app.store.loading and app.view_ready.is_set())
            await pilot.pause()
            for _ in range(pos):
                await pilot.press("j")
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, JourneyScreen))
            log = app.screen.query_one(Log)
            await until(pilot, lambda: log.line_count > 1 and not log.lines[0].startswith("joining"))
            check(list(log.lines))
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, JourneyScreen))
    asyncio.run(main())


@pytest.mark.parametrize("name, method", [("remoting_pop", "ACK_MESSAGE"), ("grpc_python", "SendMessage")])
def test_t_opens_the_journey_of_the_message_an_exchange_carries(name: str, method: str) -> None:
    """``t`` on an exchange (a remoting ACK_MESSAGE, which names its message by queue and offset
    only; a gRPC SendMessage) shows that message's journey: its unique key, finished, and a line
    per hop from sent to acked."""
    cap = CAPTURES / f"{name}.pcap"
    exchanges = analyze([str(cap)]).exchanges
    pos, ex = next((i, ex) for i, ex in enumerate(exchanges)
                   if protocol_of(ex).classifier.request_name(ex.code or 0) == method)
    ev = protocol_of(ex).journey_events(ex)[0]
    sent = {s["msg_id"] for s in json.loads((CAPTURES / f"{name}.truth.json").read_text())["sent"]}

    def check(lines: list[str]) -> None:
        key = lines[0].split()[0]
        assert key in sent and (ev.unique_key is None or ev.unique_key == key)
        assert "finished" in lines[0]
        kinds = [line.split()[1] for line in lines[1:]]
        assert kinds[0] == "sent" and {"stored", "delivered", "acked"} <= set(kinds)
    _run(cap, pos, check)
