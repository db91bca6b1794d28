"""``rmqsniff trace`` against what real clients recorded of each message's journey.

The journey scenario (tests/rocketmq/java/Journey.java): a Java remoting producer and a push
consumer that retries some messages, dead-letters one and is slow for a while; its truth holds
every send, consume attempt and the DLQ copy. Over the committed captures (no cluster) and, marked
``rocketmq``, live against a real cluster. gRPC: the grpc_java scenario (Java 5.x producer and
SimpleConsumer through the proxy), whose journeys join the client's and the proxy's hops.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.journeys import check_grpc_journeys, check_journeys, check_traced, journeys

CAPTURES = Path(__file__).resolve().parent.parent / "captures"


def committed(name: str) -> tuple[Path, dict]:
    pcap, truth = CAPTURES / f"{name}.pcap", CAPTURES / f"{name}.truth.json"
    assert pcap.exists() and truth.exists(), f"captures/{name}.pcap (+ .truth.json) missing"
    return pcap, json.loads(truth.read_text())


@pytest.mark.parametrize("name", ["remoting_journey", "remoting_journey_trace"])
def test_committed_journeys_equal_the_clients_record(name):
    pcap, truth = committed(name)
    js = journeys(pcap)
    assert check_journeys(js, truth) == []
    if truth["msg_trace"]:
        assert check_traced(js, truth) == []


def test_committed_journey_lookup_by_id():
    """``trace CAPTURE ID``: by unique key, offset msg id, key and trace id, the one journey."""
    pcap, truth = committed("remoting_journey")
    m = next(m for m in truth["messages"] if m["trace"] and m["trace"]["format"] == "w3c")
    for ident in (m["msg_id"], m["offset_msg_id"], m["keys"], m["trace"]["trace_id"]):
        assert list(journeys(pcap, args=(ident,))) == [m["msg_id"]], ident


def test_committed_grpc_journeys_join_client_and_proxy_hops():
    pcap, truth = committed("grpc_java")
    assert check_grpc_journeys(journeys(pcap), truth) == []


@pytest.mark.rocketmq
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["remoting_journey", "remoting_journey_trace"])
def test_live_journeys_equal_the_clients_record(rocketmq_capture, name):
    pcap, truth = rocketmq_capture(name)
    js = journeys(pcap)
    assert check_journeys(js, truth) == []
    if truth["msg_trace"]:
        assert check_traced(js, truth) == []


@pytest.mark.rocketmq
@pytest.mark.timeout(900)
def test_live_grpc_journeys_join_client_and_proxy_hops(rocketmq_capture):
    pcap, truth = rocketmq_capture("grpc_java")
    assert check_grpc_journeys(journeys(pcap), truth) == []
