"""``rmqsniff lag`` against ``mqadmin consumerProgress`` for the same group, queue by queue.

The journey scenario's consumer (group CG_journey) is slow on a burst (lag builds and drains) and
is stopped before a last few sends (lag left at the end); after the capture the harness runs
``mqadmin consumerProgress -g CG_journey``. Over the committed capture (no cluster) and live
(marked ``rocketmq``).
"""
from __future__ import annotations

import pytest

from tests.support.journeys import check_lag_at_end, check_lag_over_time, lag_rows
from tests.test_journey_real import committed


def test_committed_lag_at_the_end_equals_mqadmin_consumer_progress():
    pcap, truth = committed("remoting_journey")
    assert sum(r["diff"] for r in truth["consumer_progress"]["rows"]) > 0  # the scenario left lag
    assert check_lag_at_end(lag_rows(pcap), truth) == []


def test_committed_lag_over_time_rises_and_drains():
    pcap, truth = committed("remoting_journey")
    assert check_lag_over_time(lag_rows(pcap, "--interval", "2s"), truth) == []


@pytest.mark.rocketmq
@pytest.mark.timeout(900)
def test_live_lag_equals_mqadmin_consumer_progress(rocketmq_capture):
    pcap, truth = rocketmq_capture("remoting_journey")
    assert check_lag_at_end(lag_rows(pcap), truth) == []
    assert check_lag_over_time(lag_rows(pcap, "--interval", "2s"), truth) == []
