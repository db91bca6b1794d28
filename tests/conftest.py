"""Shared fixtures: the real RocketMQ cluster (session-scoped) and its live captures."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Helpers in tests/support/ assert too: rewrite their asserts as pytest does the tests' own,
# so a failing helper explains itself (must run before anything imports them).
pytest.register_assert_rewrite("tests.support")

REQUIRED_TOOLS = {
    "java": "a JDK 17 runtime starts the name server, broker and proxy",
    "javac": "the client programs are compiled once into the cache",
    "mvn": "Maven collects the RocketMQ jars from Maven Central",
    "tcpdump": "tcpdump records the loopback traffic",
}


@pytest.fixture(scope="session")
def rocketmq_cluster(tmp_path_factory):
    """A running name server + broker + proxy with the scenario topics and groups."""
    from tests.support.prerequisites import unavailable  # after register_assert_rewrite above

    for tool, why in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            unavailable(f"`{tool}` not found on PATH ({why})")
    from tests.rocketmq import build
    from tests.rocketmq.cluster import Cluster, Ports

    build.build_remoting_programs()  # build errors fail, they are not a reason to skip
    cluster = Cluster(tmp_path_factory.mktemp("rocketmq"), ports=Ports.from_env())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _captures(cluster, out: Path):
    from tests.rocketmq.scenarios import run_scenario

    done: dict[str, tuple] = {}

    def get(name: str):
        if name not in done:
            done[name] = run_scenario(cluster, name, out)
        return done[name]

    return get


@pytest.fixture(scope="session")
def rocketmq_capture(rocketmq_cluster, tmp_path_factory):
    """``rocketmq_capture(name) -> (pcap, truth)``: run each scenario once per session."""
    return _captures(rocketmq_cluster, Path(tmp_path_factory.mktemp("captures")))


@pytest.fixture(scope="session")
def rocketmq_tls_cluster(tmp_path_factory):
    """A second cluster with remoting TLS enforcing (``Cluster(remoting_tls=True)``), on the
    cluster ports + 1000 so it can run beside :func:`rocketmq_cluster`."""
    from tests.support.prerequisites import unavailable

    for tool, why in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            unavailable(f"`{tool}` not found on PATH ({why})")
    from tests.rocketmq import build
    from tests.rocketmq.cluster import Cluster, Ports

    build.build_remoting_programs()
    p = Ports.from_env()
    ports = Ports(p.namesrv + 1000, p.broker + 1000, p.proxy + 1000, p.grpc + 1000)
    cluster = Cluster(tmp_path_factory.mktemp("rocketmq-tls"), ports=ports, remoting_tls=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def rocketmq_tls_capture(rocketmq_tls_cluster, tmp_path_factory):
    """``rocketmq_tls_capture(name) -> (pcap, truth)`` for the remoting TLS scenarios."""
    return _captures(rocketmq_tls_cluster, Path(tmp_path_factory.mktemp("tls-captures")))
