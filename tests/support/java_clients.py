"""The Java client programs of the real-cluster harness (``tests/rocketmq/java``) run
against a cluster: ``run_java`` runs the remoting or gRPC scenario program, ``labels``
counts the messages of its truth file by kind and index."""
from __future__ import annotations

import os
import subprocess
from collections import Counter

from tests.rocketmq import build


def labels(entries: list[dict]) -> Counter:
    return Counter(f"{e.get('kind')}:{e.get('idx', e.get('user_properties', {}).get('idx'))}" for e in entries)


def run_java(cluster, home: str, *args: str, jvm: tuple[str, ...] = (), grpc: bool = False,
              timeout: float = 300, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    if grpc:
        classes = build.build_grpc_programs()
        cmd = cluster.java_cmd(home, classes, "GrpcScenario", *args, lib=build.grpc_lib(),
                               jvm=[*jvm, f"-Drmqsniff.client.version={build.GRPC_CLIENT_VERSION}"])
    else:
        cmd = cluster.java_cmd(home, build.build_remoting_programs(), "RemotingScenario", *args, jvm=list(jvm))
    d = cluster.dir(home)
    env = dict(os.environ, HOME=str(d))
    env.pop("NAMESRV_ADDR", None)
    proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=d)
    assert proc.returncode == 0, "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    return proc


