"""Pre-encoded replay frames: a template renders exactly what a full rewrite + encode gives,
and requests whose bytes depend on more than the opaque and the clock are never templated."""
from __future__ import annotations

from pathlib import Path

import pytest

from dissectors.remoting import codes as c
from dissectors.remoting.command import ROCKETMQ, RemotingCommand
from dissectors.remoting.frame import decode_frame, encode
from dissectors.remoting.message import parse_properties, properties_to_string
from replay.engine import Rewriter, Rules
from replay.engine.frames import build_template
from replay.engine.runner import TEMPLATED
from rmqsniff.pipeline import analyze

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
NOW = 1_763_000_000_000


def producer_requests(name: str) -> list[RemotingCommand]:
    out = []
    for ex in analyze([str(CAPTURES / name)]).exchanges:
        if ex.request is not None and not ex.server_initiated and ex.request.command.code in TEMPLATED:
            out.append(ex.request.command)
    return out


@pytest.mark.parametrize("capture", ["remoting_json.pcap", "remoting_rocketmq.pcap", "remoting_go.pcap"])
def test_template_renders_what_a_full_rewrite_encodes(capture):
    reqs = producer_requests(capture)
    assert reqs, f"{capture} has no producer requests"
    rw = Rewriter(Rules(topics={"TopicTest": "Mapped"}), copy=3)
    kinds = set()
    templated = 0
    for src in reqs:
        def rewrite(ms: int, src: RemotingCommand = src) -> RemotingCommand:
            return rw.request(src, ms)

        t = build_template(rewrite, NOW)
        if t is None:
            continue
        templated += 1
        kinds.add(src.serialize)
        for opaque, ms in ((1, NOW + 5), (987_654, NOW + 12_345), (0x7FFFFFFF, NOW + 999_999)):
            want = rw.request(src, ms)
            want.opaque = opaque
            frame = t.render(opaque, ms)
            assert frame == encode(want)
            got = decode_frame(frame)
            assert got.opaque == opaque and got.code == src.code
    assert templated >= len(reqs) // 2, f"only {templated}/{len(reqs)} requests of {capture} templated"
    if capture == "remoting_rocketmq.pcap":
        assert ROCKETMQ in kinds


def test_born_timestamp_is_patched_in_send_frames():
    send = next(r for r in producer_requests("remoting_json.pcap") if r.code == c.SEND_MESSAGE_V2)
    rw = Rewriter(Rules())
    t = build_template(lambda ms: rw.request(send, ms), NOW)
    assert t is not None
    ext = decode_frame(t.render(42, NOW + 7)).ext
    assert ext is not None
    assert ext["g"] == str(NOW + 7)


def test_requests_depending_on_more_than_opaque_and_clock_are_not_templated():
    send = next(r for r in producer_requests("remoting_json.pcap") if r.code == c.SEND_MESSAGE_V2)
    # a fresh UNIQ_KEY per send: random bytes
    assert build_template(lambda ms: Rewriter(Rules(fresh_ids=True)).request(send, ms), NOW) is None
    # an ACL signature over the refreshed born timestamp
    signed = Rules(access_key="ak", secret_key="sk")
    assert build_template(lambda ms: Rewriter(signed).request(send, ms), NOW) is None
    # a timer message: TIMER_DELIVER_MS moves with the clock but is not the clock
    assert send.ext is not None
    timed = RemotingCommand(send.code, send.flag, send.opaque, send.language, send.version, send.remark,
                            dict(send.ext), send.body, send.serialize)
    assert timed.ext is not None
    born = int(timed.ext["g"])
    props = parse_properties(timed.ext.get("i", ""))
    props["TIMER_DELIVER_MS"] = str(born + 60_000)
    timed.ext["i"] = properties_to_string(props)
    assert build_template(lambda ms: Rewriter(Rules()).request(timed, ms), NOW) is None
