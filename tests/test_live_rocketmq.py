"""``rmqsniff live -i lo`` against the real cluster while a real Java client produces and consumes.

The live stats must equal the client's ground truth, and equal ``rmqsniff stats`` on the pcapng
the tap wrote with ``-w``; the Prometheus endpoint is scraped and parsed on the way.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "remoting_json"


def _envoy(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


@pytest.mark.rocketmq
@pytest.mark.timeout(900)
def test_live_tap_equals_client_truth_and_stats_of_its_pcapng(rocketmq_cluster, tmp_path):
    from tests.rocketmq.scenarios import capture_ports, run_scenario
    from tests.rocketmq.verify import SINGLE_SEND_COUNTS, check_remoting

    cluster = rocketmq_cluster
    bpf = "host 127.0.0.1 and (" + " or ".join(f"tcp port {p}" for p in capture_ports(cluster)) + ")"
    ports = ",".join(str(p) for p in cluster.ports.remoting)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    tap = subprocess.Popen(
        [sys.executable, "-m", "rmqsniff", "live", "-i", "lo", "-f", bpf, "--port", ports, "-w", "live.pcapng",
         "--stat-prefix", "it", "--prometheus", "127.0.0.1:0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        assert tap.stderr is not None  # stderr=PIPE
        while "listening on" not in seen:
            line = tap.stderr.readline()
            assert line or tap.poll() is None, seen
            seen += line
        m = re.search(r"serving (http://\S+)/metrics", seen)
        assert m, seen
        url = m.group(1)

        pcap, truth = run_scenario(cluster, SCENARIO, tmp_path / "scenario")
        time.sleep(1.0)  # the tap is at most one ring block (50 ms) behind
        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    finally:
        tap.send_signal(signal.SIGINT)
        out, err = tap.communicate(timeout=120)
    assert tap.returncode == 0, err
    live = _envoy(out)

    # Prometheus: the exposition parses and carries the same counters as the final stats
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
               if s.labels.get("stat_prefix") == "it" and len(s.labels) == 1}
    counts = truth["counts"]
    singles = sum(counts.get(k, 0) for k in SINGLE_SEND_COUNTS)
    assert singles > 0
    assert samples["rocketmq_send_message_v2_total"] == singles
    drops = {s.labels["interface"]: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
             if s.name == "rocketmq_capture_kernel_drops_total"}
    assert drops == {"lo": 0}

    # the live stats against the client's ground truth
    assert live["rocketmq.it.send_message_v2"] == str(singles)
    assert live["rocketmq.it.send_message_v1"] == "0"
    assert live.get("rocketmq.it.request_code.SEND_BATCH_MESSAGE.requests", "0") == str(counts.get("batch", 0))
    assert live["rocketmq.it.request_decoding_error"] == "0" == live["rocketmq.it.response_decoding_error"]
    assert re.search(r"lo: \d+ packets received by filter, 0 dropped by kernel", err), err

    # the pcapng the tap wrote: every id, offset and digest of the client, and the very same stats
    problems = check_remoting(tmp_path / "live.pcapng", truth)
    assert problems == []
    st = subprocess.run([sys.executable, "-m", "rmqsniff", "stats", "--stat-prefix", "it", "--port", ports,
                         str(tmp_path / "live.pcapng")], capture_output=True, text=True, env=env, timeout=300)
    assert st.returncode == 0, st.stderr
    assert out == st.stdout
