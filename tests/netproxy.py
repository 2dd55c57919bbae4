"""A loopback TCP proxy that can make the network misbehave the way NATs and
load balancers do: ``freeze()`` stops forwarding on every open connection
without closing it (no FIN, no RST) while new connections flow normally, and
``delay`` holds every chunk from the server back for that many seconds.

A frozen connection's sockets stay open until ``close()``: its peer's writes
are buffered by the kernel and never answered. The kernel still ACKs them, and
TCP keepalive probes too, so only the client's own read timeouts can notice
(a real NAT that drops the flow lets keepalive notice as well).

Threads, not asyncio, so a test can drive it from plain synchronous code."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType


class _Pipe:
    """One client connection and its server connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.frozen = False

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.close()


class SilentProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.delay = 0.0
        self.swallow_new = False
        self.connections = 0  # accepted so far, frozen or not
        self._pipes: list[_Pipe] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self, new_too: bool = False) -> int:
        """Stop forwarding on every open connection, silently; returns how many.
        ``new_too``: connections made from now on are accepted and never
        forwarded either (the whole path is gone, not one flow)."""
        with self._lock:
            self.swallow_new = self.swallow_new or new_too
            live = [p for p in self._pipes if not p.frozen]
            for pipe in live:
                pipe.frozen = True
            return len(live)

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for p in self._pipes if not p.frozen)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pipe = _Pipe(client, server)
            with self._lock:
                if self._stopped.is_set():
                    pipe.close()
                    return
                self._pipes.append(pipe)
                self.connections += 1
                pipe.frozen = self.swallow_new
            if not pipe.frozen:
                threading.Thread(target=self._forward, args=(pipe,), daemon=True).start()

    def _forward(self, pipe: _Pipe) -> None:
        """Copy chunks both ways until either side closes; once frozen, stop
        reading and writing but leave both sockets open."""
        peers = {pipe.client: pipe.server, pipe.server: pipe.client}
        try:
            while not self._stopped.is_set() and not pipe.frozen:
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is pipe.server and self.delay:
                        time.sleep(self.delay)
                    if pipe.frozen:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            if not pipe.frozen:
                pipe.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for pipe in self._pipes:
                pipe.close()

    def __enter__(self) -> SilentProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
