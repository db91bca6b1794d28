"""Staging routes: which staging broker serves a topic, asked of the target name server."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from dissectors.remoting import codes as c
from dissectors.remoting.bodies import broker_addresses, decode_body
from dissectors.remoting.command import RemotingCommand
from rmqsniff.model import Endpoint

from .client import Client
from .safety import Guard, endpoint

VERSION = 479  # V5_3_3


class RouteError(RuntimeError):
    """The target name server could not be asked (one line)."""


@dataclass(slots=True)
class Route:
    brokers: dict[str, dict[int, str]] = field(default_factory=dict)  # name -> {id: "ip:port"}
    write_queues: dict[str, int] = field(default_factory=dict)  # broker name -> writeQueueNums

    def master(self, name: str | None) -> tuple[str, Endpoint] | None:
        """(broker name, address) of ``name``'s master, else of the first broker with one."""
        names = ([name] if name in self.brokers else []) + sorted(self.brokers)
        for n in names:
            addr = self.brokers[n].get(0)
            if addr:
                return n, endpoint(addr)
        return None


def _request(code: int, ext: dict[str, str] | None = None) -> RemotingCommand:
    return RemotingCommand(code, 0, 0, "JAVA", VERSION, None, ext)


class Routes:
    """Cached route lookups on one connection to the target name server."""

    def __init__(self, namesrv: Endpoint, guard: Guard, timeout: float = 3.0) -> None:
        self.namesrv = namesrv
        self.guard = guard
        self.timeout = timeout
        self._client: Client | None = None
        self._cache: dict[str, asyncio.Future] = {}
        self.lookups = 0

    async def _conn(self) -> Client:
        if self._client is None or self._client.error is not None:
            ep = self.guard.approve(self.namesrv, "target name server")
            try:
                self._client = await Client.connect(ep, self.timeout)
            except (OSError, asyncio.TimeoutError) as e:
                raise RouteError(f"cannot connect to the target name server "
                                 f"{self.namesrv[0]}:{self.namesrv[1]}: {e or 'timeout'}") from None
        return self._client

    async def _ask(self, cmd: RemotingCommand) -> RemotingCommand:
        client = await self._conn()
        self.lookups += 1
        try:
            return await client.request(cmd, self.timeout)
        except (ConnectionError, asyncio.TimeoutError) as e:
            raise RouteError(f"target name server {self.namesrv[0]}:{self.namesrv[1]} did not answer "
                             f"{c.request_name(cmd.code)}: {e or 'timeout'}") from None

    async def get(self, topic: str) -> Route | None:
        """The staging route of ``topic`` (None when the name server does not know it)."""
        fut = self._cache.get(topic)
        if fut is None:
            fut = self._cache[topic] = asyncio.ensure_future(self._lookup(topic))
        try:
            return await asyncio.shield(fut)
        except RouteError:
            self._cache.pop(topic, None)
            raise

    async def _lookup(self, topic: str) -> Route | None:
        req = _request(c.GET_ROUTEINFO_BY_TOPIC, {"topic": topic})
        resp = await self._ask(req)
        if resp.code != c.SUCCESS:
            return None
        view = decode_body(resp, req)
        route = Route(brokers=broker_addresses(view.value))
        for qd in (view.value or {}).get("queueDatas") or []:
            if isinstance(qd, dict) and qd.get("brokerName") is not None:
                with contextlib.suppress(TypeError, ValueError):
                    route.write_queues[str(qd["brokerName"])] = int(qd.get("writeQueueNums") or 0)
        return route

    async def any_master(self, name: str | None = None) -> tuple[str, Endpoint] | None:
        """A master broker of the cluster (``name`` preferred), from GET_BROKER_CLUSTER_INFO."""
        fut = self._cache.get("\0cluster")
        if fut is None:
            fut = self._cache["\0cluster"] = asyncio.ensure_future(self._cluster())
        route = await asyncio.shield(fut)
        return route.master(name) if route else None

    async def _cluster(self) -> Route | None:
        req = _request(c.GET_BROKER_CLUSTER_INFO)
        resp = await self._ask(req)
        if resp.code != c.SUCCESS:
            return None
        view = decode_body(resp, req)
        table = (view.value or {}).get("brokerAddrTable") if isinstance(view.value, dict) else None
        return Route(brokers=broker_addresses(list((table or {}).values())))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
