"""Launch a real Apache RocketMQ cluster (name server, broker, cluster-mode proxy) from jars.

Each component runs as ``java -cp lib/*`` in its own scratch folder (own ``user.home``,
so logs and store stay there) with small heaps. Readiness is probed (TCP connect, then the
broker's registration in the name server via one batched admin JVM), never slept for.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import build, tls

CLUSTER_NAME = "DefaultCluster"
BROKER_NAME = "broker-a"
HOST = "127.0.0.1"

JVM_COMMON = [
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:TieredStopAtLevel=1",  # C1 only: faster startup on 2 cores, plenty for tests
    "-Djava.net.preferIPv4Stack=true",
]
HEAPS = {
    "namesrv": ["-Xms128m", "-Xmx256m"],
    "broker": ["-Xms512m", "-Xmx1g", "-XX:MaxDirectMemorySize=1g"],
    "proxy": ["-Xms256m", "-Xmx512m", "-XX:MaxDirectMemorySize=512m"],
    "tool": ["-Xms64m", "-Xmx256m"],
}
MAIN_CLASS = {
    "namesrv": "org.apache.rocketmq.namesrv.NamesrvStartup",
    "broker": "org.apache.rocketmq.broker.BrokerStartup",
    "proxy": "org.apache.rocketmq.proxy.ProxyStartup",
}

MQADMIN = "org.apache.rocketmq.tools.command.MQAdminStartup"  # what the mqadmin script runs

# Topics (name, message.type or None) and groups the scenarios rely on.
TOPICS: list[tuple[str, str | None]] = [
    ("TopicTest", None),       # remoting, JSON headers
    ("TopicTestBin", None),    # remoting, ROCKETMQ binary headers
    ("TopicPop", None),        # remoting pop consumption
    ("TopicTrans", None),      # remoting transaction with check-back
    ("GrpcTopic", "NORMAL"),
    ("FifoTopic", "FIFO"),
    ("DelayTopic", "DELAY"),
    ("TxTopic", "TRANSACTION"),
    ("PyTopic", "NORMAL"),
]
GROUPS = ["GID_fifo:orderly", "CG_pop", "GID_simple", "GID_push", "GID_py"]
POP_GROUPS = [("TopicPop", "CG_pop")]


class ClusterError(RuntimeError):
    """The cluster could not be started (message carries the relevant log tail)."""


@dataclass
class Ports:
    namesrv: int = 9876
    broker: int = 10911
    proxy: int = 8080
    grpc: int = 8081

    @classmethod
    def from_env(cls) -> Ports:
        env = os.environ
        return cls(
            namesrv=int(env.get("RMQSNIFF_NAMESRV_PORT", 9876)),
            broker=int(env.get("RMQSNIFF_BROKER_PORT", 10911)),
            proxy=int(env.get("RMQSNIFF_PROXY_PORT", 8080)),
            grpc=int(env.get("RMQSNIFF_GRPC_PORT", 8081)),
        )

    def all_listening(self) -> dict[str, int]:
        """Every port the cluster binds (the broker also opens listenPort-2 and listenPort+1)."""
        return {
            "namesrv": self.namesrv,
            "broker": self.broker,
            "broker-fast": self.broker - 2,
            "broker-ha": self.broker + 1,
            "proxy-remoting": self.proxy,
            "proxy-grpc": self.grpc,
        }

    @property
    def remoting(self) -> list[int]:
        """Ports carrying RocketMQ remoting traffic."""
        return [self.namesrv, self.broker, self.broker - 2, self.proxy]


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path.name})"
    return f"--- {path} ---\n" + "\n".join(data[-lines:])


@dataclass
class Cluster:
    """A name server + broker + cluster-mode proxy rooted at ``base_dir``.

    ``remoting_tls``: remoting is TLS only (``tls.server.mode=enforcing``), inter-server
    remoting too; the name server's and broker's TLS secrets (every session they take part
    in, the proxy's included) go to :meth:`server_keylog`; the tools speak TLS."""

    base_dir: Path
    ports: Ports = field(default_factory=Ports.from_env)
    host: str = HOST  # the address every component binds and advertises
    lib: Path | None = None
    remoting_tls: bool = False
    pids: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    stop_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).expanduser().resolve()
        self.lib = Path(self.lib) if self.lib else build.server_lib()
        self._procs: dict[str, subprocess.Popen] = {}

    # ---- addresses -------------------------------------------------------------------
    @property
    def namesrv_addr(self) -> str:
        return f"{self.host}:{self.ports.namesrv}"

    @property
    def broker_addr(self) -> str:
        return f"{self.host}:{self.ports.broker}"

    @property
    def proxy_addr(self) -> str:
        return f"{self.host}:{self.ports.proxy}"

    @property
    def grpc_addr(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def dir(self, component: str) -> Path:
        return self.base_dir / component

    def server_log(self, component: str) -> Path:
        return self.dir(component) / "logs" / "rocketmqlogs" / f"{_role(component)}.log"

    # ---- configuration -----------------------------------------------------------------
    def write_configs(self) -> None:
        """Write namesrv.conf, broker.conf and rmq-proxy.json (absolute paths, no variables)."""
        home = self.base_dir / "home" / "conf"
        home.mkdir(parents=True, exist_ok=True)
        for c in ("namesrv", "broker", "proxy", "tools", "clients"):
            self.dir(c).mkdir(parents=True, exist_ok=True)
        (self.base_dir / "namesrv.conf").write_text(
            f"listenPort={self.ports.namesrv}\n"
            f"bindAddress={self.host}\n"
            f"kvConfigPath={self.dir('namesrv') / 'namesrv' / 'kvConfig.json'}\n"
        )
        store = self.dir("broker") / "store"
        (self.base_dir / "broker.conf").write_text("\n".join([
            f"brokerClusterName={CLUSTER_NAME}",
            f"brokerName={BROKER_NAME}",
            "brokerId=0",
            "brokerRole=ASYNC_MASTER",
            "flushDiskType=ASYNC_FLUSH",
            f"namesrvAddr={self.namesrv_addr}",
            f"brokerIP1={self.host}",
            f"listenPort={self.ports.broker}",
            f"bindAddress={self.host}",
            f"storePathRootDir={store}",
            f"storePathCommitLog={store / 'commitlog'}",
            "mappedFileSizeCommitLog=104857600",
            "mappedFileSizeConsumeQueue=600000",
            "maxHashSlotNum=50000",
            "maxIndexNum=200000",
            "autoCreateTopicEnable=true",
            "autoCreateSubscriptionGroup=true",
            "enablePropertyFilter=true",
            "transientStorePoolEnable=false",
            "warmMapedFileEnable=false",
            "waitTimeMillsInSendQueue=3000",
            "osPageCacheBusyTimeOutMills=3000",
            "transactionTimeOut=3000",
            "transactionCheckInterval=3000",
            "enableMixedMessageType=true",
            "traceTopicEnable=true",  # RMQ_SYS_TRACE_TOPIC exists for enableMsgTrace clients (a system topic)
            "diskMaxUsedSpaceRatio=95",
            "",
        ]))
        proxy_cfg = {
            "rocketMQClusterName": CLUSTER_NAME,
            "namesrvAddr": self.namesrv_addr,
            "proxyMode": "cluster",
            "grpcServerPort": self.ports.grpc,
            "remotingListenPort": self.ports.proxy,
            "localServeAddr": self.host,
            "remotingAccessAddr": self.host,
            "enablePrintJstack": False,
        }
        (home / "rmq-proxy.json").write_text(json.dumps(proxy_cfg, indent=2) + "\n")

    def server_keylog(self, component: str) -> Path:
        """The key log the TLS agent in a name server or broker JVM appends to (``remoting_tls``)."""
        return self.dir(component) / "tls-keys.log"

    def server_keylog_sizes(self) -> dict[Path, int]:
        """How far each server JVM's key log has grown (empty without ``remoting_tls``)."""
        return {p: p.stat().st_size for p in sorted(self.base_dir.glob("*/tls-keys.log"))}

    def server_keylogs(self, since: dict[Path, int] | None = None) -> str:
        """The server JVMs' key logs concatenated, each from its size in ``since`` on."""
        return "".join(p.read_bytes()[(since or {}).get(p, 0):].decode() for p in self.server_keylog_sizes())

    def _proxy_config(self, component: str) -> Path:
        return self.base_dir / "home" / "conf" / f"rmq-{component}.json"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ROCKETMQ_HOME"] = str(self.base_dir / "home")
        env.pop("NAMESRV_ADDR", None)
        return env

    def _cmd(self, component: str) -> list[str]:
        d = self.dir(component)
        role = _role(component)
        jvm = [o for o in JVM_COMMON if ":" not in self.host or not o.startswith("-Djava.net.preferIPv4Stack")]
        if self.remoting_tls:
            jvm += tls.server_jvm(role, self.server_keylog(component))
        cmd = ["java", *HEAPS[role], *jvm, f"-Duser.home={d}",
               f"-Drmq.logback.configurationFile=rmq.{role}.logback.xml",
               "-cp", f"{self.lib}/*", MAIN_CLASS[role]]
        if role == "namesrv":
            cmd += ["-c", str(self.base_dir / "namesrv.conf")]
        elif role == "broker":
            cmd += ["-c", str(self.base_dir / "broker.conf")]
        else:
            cmd += ["-pm", "cluster", "-pc", str(self._proxy_config(component)), "-n", self.namesrv_addr]
        return cmd

    # ---- lifecycle ---------------------------------------------------------------------
    def preflight(self) -> None:
        """Fail early on the known pitfalls: busy ports, unresolvable hostname, full disk."""
        busy = {n: p for n, p in self.ports.all_listening().items() if not port_free(p, self.host)}
        if busy:
            raise ClusterError(f"ports already in use: {busy} (another cluster running? "
                               "set RMQSNIFF_*_PORT or run `python -m tests.rocketmq down`)")
        try:
            socket.gethostbyname(socket.gethostname())
        except OSError as e:
            raise ClusterError(f"hostname {socket.gethostname()!r} does not resolve ({e}); "
                               "RocketMQ calls InetAddress.getLocalHost() - add it to /etc/hosts") from e
        self.base_dir.mkdir(parents=True, exist_ok=True)
        du = shutil.disk_usage(self.base_dir)
        if du.used / du.total > 0.80:
            raise ClusterError(f"disk holding {self.base_dir} is {du.used / du.total:.0%} full; "
                               "the broker rejects writes above 90% and deletes files above 85%")

    def _spawn(self, component: str) -> None:
        d = self.dir(component)
        with open(d / "stdout.log", "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(self._cmd(component), cwd=d, env=self._env(), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self._procs[component] = proc
        self.pids[component] = proc.pid

    def _alive(self, component: str) -> bool:
        proc = self._procs.get(component)
        if proc is not None:
            return proc.poll() is None
        return pid_alive(self.pids.get(component))

    def _fail(self, component: str, why: str) -> ClusterError:
        logs = [tail(self.dir(component) / "stdout.log"), tail(self.server_log(component))]
        return ClusterError(f"{component} {why}\n" + "\n".join(logs))

    def _wait_port(self, component: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(port, self.host):
            if not self._alive(component):
                raise self._fail(component, f"exited before opening port {port}")
            if time.monotonic() > deadline:
                raise self._fail(component, f"did not open port {port} within {timeout:.0f}s")
            time.sleep(0.2)

    def start(self, timeout: float = 120.0, setup: bool = True) -> Cluster:
        """Start namesrv, broker, proxy (in that order), then create topics and groups."""
        if shutil.which("java") is None:
            raise ClusterError("java not found on PATH")
        t0 = time.monotonic()
        self.preflight()
        self.write_configs()
        try:
            self._spawn("namesrv")
            self._wait_port("namesrv", self.ports.namesrv, timeout)
            self._spawn("broker")
            self._wait_port("broker", self.ports.broker, timeout)
            out = self.admin(f"wait={int(timeout * 1000)}")
            if "READY" not in out:
                raise self._fail("broker", f"never registered in the name server: {out.strip()}")
            self._spawn("proxy")  # cluster-mode proxy needs the broker registered first
            self._wait_port("proxy", self.ports.grpc, timeout)
            self._wait_port("proxy", self.ports.proxy, timeout)
            if setup:
                self.setup()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def start_extra_proxy(self, name: str, grpc_port: int, remoting_port: int, timeout: float = 120.0,
                          **config: object) -> None:
        """Start one more cluster-mode proxy ``proxy-NAME`` (own folder, own ports, ``config``
        added to rmq-proxy.json) next to the running cluster, e.g. to serve gRPC on an unusual
        port; :meth:`stop` stops it first."""
        component = f"proxy-{name}"
        busy = [p for p in (grpc_port, remoting_port) if not port_free(p, self.host)]
        if busy:
            raise ClusterError(f"{component}: ports already in use: {busy}")
        self.dir(component).mkdir(parents=True, exist_ok=True)
        cfg = json.loads(self._proxy_config("proxy").read_text())
        cfg.update(grpcServerPort=grpc_port, remotingListenPort=remoting_port, **config)
        self._proxy_config(component).write_text(json.dumps(cfg, indent=2) + "\n")
        self._spawn(component)
        try:
            self._wait_port(component, grpc_port, timeout)
            self._wait_port(component, remoting_port, timeout)
        except BaseException:
            self.stop_component(component)
            raise

    def stop_component(self, component: str, timeout: float = 30.0) -> None:
        """SIGTERM one component this object started or adopted, SIGKILL after ``timeout``."""
        pid = self.pids.get(component)
        if pid is None:
            return
        proc = self._procs.get(component)
        if proc is None and not _is_ours(pid, self.base_dir):
            self.pids.pop(component, None)  # pid reused by another process: leave it alone
            return
        t0 = time.monotonic()
        _terminate(pid, proc, timeout)
        self.stop_seconds[component] = round(time.monotonic() - t0, 1)
        self.pids.pop(component, None)
        self._procs.pop(component, None)

    def setup(self) -> str:
        """Create the typed topics and groups the scenarios use (one admin JVM)."""
        ops = [f"topic={t}:{k}" if k else f"topic={t}" for t, k in TOPICS]
        ops += [f"group={g}" for g in GROUPS]
        ops += [f"pop={t}:{g}" for t, g in POP_GROUPS]
        return self.admin(*ops)

    def admin(self, *ops: str, timeout: float = 180.0) -> str:
        """Run batched admin operations (see java/Admin.java); returns stdout, raises on failure."""
        classes = build.build_remoting_programs()
        cmd = self.java_cmd("tools", classes, "Admin", self.namesrv_addr, CLUSTER_NAME, *ops)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env(),
                              cwd=self.dir("tools"))
        if proc.returncode != 0:
            raise ClusterError(f"admin {' '.join(ops)} failed (exit {proc.returncode}):\n"
                               + "\n".join((proc.stdout + proc.stderr).splitlines()[-30:]))
        return proc.stdout

    def mqadmin(self, command: str, *args: str, timeout: float = 120.0) -> str:
        """Run one ``mqadmin`` command (rocketmq-tools' MQAdminStartup) against this cluster's
        name server; returns its stdout, raises on failure."""
        cmd = self.java_cmd("tools", build.build_remoting_programs(), MQADMIN, command, "-n", self.namesrv_addr,
                            *args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env(),
                              cwd=self.dir("tools"))
        if proc.returncode != 0 or "SubCommandException" in proc.stdout + proc.stderr:
            raise ClusterError(f"mqadmin {command} {' '.join(args)} failed (exit {proc.returncode}):\n"
                               + "\n".join((proc.stdout + proc.stderr).splitlines()[-30:]))
        return proc.stdout

    def java_cmd(self, home: str, classes: Path, main: str, *args: str, lib: Path | None = None,
                 jvm: list[str] | None = None) -> list[str]:
        """A client/tool JVM command line with ``user.home`` under ``base_dir/home``."""
        d = self.dir(home)
        d.mkdir(parents=True, exist_ok=True)
        return ["java", *HEAPS["tool"], "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                f"-Duser.home={d}", f"-Drocketmq.log.root={d / 'logs'}",
                "-Drmq.logback.configurationFile=rmq.client.logback.xml",
                "-Dcom.rocketmq.sendMessageWithVIPChannel=false",
                *(tls.REMOTING_TLS_CLIENT if self.remoting_tls else ()), *(jvm or []),
                "-cp", f"{classes}:{lib or self.lib}/*", main, *args]

    def running(self) -> dict[str, bool]:
        return {c: self._alive(c) for c in ("namesrv", "broker", "proxy")}

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the proxies, broker, namesrv (in that order), SIGKILL after ``timeout``."""
        extra = sorted(c for c in self.pids if c.startswith("proxy-"))
        for component in (*extra, "proxy", "broker", "namesrv"):
            self.stop_component(component, timeout)

    # ---- state (for `python -m tests.rocketmq up/down`) ----------------------------------
    def to_state(self) -> dict:
        return {"base_dir": str(self.base_dir), "ports": asdict(self.ports), "lib": str(self.lib),
                "pids": dict(self.pids), "remoting_tls": self.remoting_tls}

    @classmethod
    def from_state(cls, state: dict) -> Cluster:
        c = cls(Path(state["base_dir"]), ports=Ports(**state["ports"]), lib=Path(state["lib"]),
                remoting_tls=bool(state.get("remoting_tls")))
        c.pids = {k: int(v) for k, v in state["pids"].items()}
        return c


def _role(component: str) -> str:
    """``proxy-NAME`` (an extra proxy) runs as a proxy; the others are their own role."""
    return "proxy" if component.startswith("proxy-") else component


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_ours(pid: int, base_dir: Path) -> bool:
    """True if ``pid`` is a java process started for ``base_dir`` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "java" in cmdline and str(base_dir) in cmdline


def _terminate(pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    if not pid_alive(pid):
        if proc is not None:
            proc.poll()
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(10)
