"""The one place replay meets the built-in proxy (``--via-proxy``).

An in-process :class:`replay.proxy.Proxy` listens on loopback with a name-server listener
forwarding to the target; broker addresses are translated into proxy listeners (opened on
demand), so every replayed byte crosses the proxy and is counted by its :class:`Stats`.
"""
from __future__ import annotations

from typing import Any

from rmqsniff.model import Endpoint

from .safety import endpoint, ep_text


class ProxyUnavailable(RuntimeError):
    """The proxy package cannot be used here (one line)."""


class Via:
    """Direct connections: addresses are used as they are."""

    name = "direct"

    async def start(self, namesrv: Endpoint | None, grpc: Endpoint | None = None) -> Endpoint | None:
        return namesrv

    async def broker(self, addr: Endpoint) -> Endpoint:
        return addr

    async def grpc(self, addr: Endpoint) -> Endpoint:
        """Where to connect for the staging gRPC endpoint ``addr``."""
        return addr

    def stats(self) -> dict[str, Any] | None:
        return None

    async def stop(self) -> None:
        return None


class ViaProxy(Via):
    """Through an in-process proxy on 127.0.0.1."""

    name = "proxy"

    def __init__(self, stat_prefix: str = "replay_proxy") -> None:
        try:
            from replay.proxy import NAMESRV, Mapping, Proxy, ProxyConfig
        except ImportError as e:  # pragma: no cover - the proxy ships with the package
            raise ProxyUnavailable(f"the built-in proxy is not available ({e})") from None
        self._mk = (NAMESRV, Mapping, Proxy, ProxyConfig)
        self.stat_prefix = stat_prefix
        self.proxy: Any = None  # the built-in Proxy (duck-typed: its first API had broker_listeners)
        self._near: Endpoint = ("127.0.0.1", 0)
        self._grpc = None  # the proxy's --grpc listener

    async def start(self, namesrv: Endpoint | None, grpc: Endpoint | None = None) -> Endpoint | None:
        """A name-server listener (and a ``--grpc`` listener for the staging gRPC endpoint)."""
        NAMESRV, Mapping, Proxy, ProxyConfig = self._mk
        from replay.proxy import GRPC, ProxyError

        near = ("127.0.0.1", 0)
        maps = [Mapping(k, near, up) for k, up in ((NAMESRV, namesrv), (GRPC, grpc)) if up is not None]
        cfg = ProxyConfig(mappings=maps, stat_prefix=self.stat_prefix, max_exchanges=0)
        self.proxy = Proxy(cfg)
        try:
            await self.proxy.start()
        except ProxyError as e:
            raise ProxyUnavailable(str(e)) from None
        self._grpc = self.proxy.listener(GRPC)
        lst = self.proxy.listener(NAMESRV)
        if lst is None:
            return None
        self._near = lst.listen
        return lst.listen

    async def broker(self, addr: Endpoint) -> Endpoint:
        p = self.proxy
        if hasattr(p, "listeners_for"):
            from replay.proxy import BROKER

            got = await p.listeners_for(BROKER, [ep_text(addr)], self._near)
        else:  # the proxy's first API
            got = await p.broker_listeners([ep_text(addr)], self._near)
        adv = got.get(ep_text(addr))
        if adv is None:
            raise ProxyUnavailable(f"the proxy could not open a listener for broker {ep_text(addr)}")
        return endpoint(adv)

    async def grpc(self, addr: Endpoint) -> Endpoint:
        lst = self._grpc
        if lst is None or lst.upstream != addr:
            raise ProxyUnavailable(f"the proxy has no gRPC listener for {ep_text(addr)}")
        return lst.listen

    def stats(self) -> dict[str, Any] | None:
        return self.proxy.stats.snapshot(top=20) if self.proxy is not None else None

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop()
