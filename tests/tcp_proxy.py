"""A loopback TCP proxy a test can cut (connections dropped, new ones closed) or stall (bytes held), then restore."""

from __future__ import annotations

import contextlib
import socket
import threading

OPEN, STALLED, CUT = "open", "stalled", "cut"


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `cut()`, `stall()` and `restore()` play a server outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.accepted = 0  # connections made through the proxy while it was not cut
        self.state = OPEN
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        """`host:port` for a client's host list."""
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop every live connection and close each new one at once, like a server that went away."""
        with self._lock:
            self.state = CUT
            live, self._sockets = self._sockets, set()
        for sock in live:
            _drop(sock)
        self._flowing.set()  # held bytes are dropped with their sockets

    def stall(self) -> None:
        """Keep accepting but forward nothing, like a server that stopped answering."""
        self.state = STALLED
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again (connections cut earlier stay closed; clients reconnect)."""
        self.state = OPEN
        self._flowing.set()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._closed = True
        self.cut()
        self._acceptor.join(5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.state == CUT:
                _drop(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _drop(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self.state == CUT:
                    _drop(client)
                    _drop(upstream)
                    continue
                self._sockets |= {client, upstream}
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                if self.state == CUT:
                    break
                sink.sendall(data)
        with self._lock:
            self._sockets -= {source, sink}
        _drop(source)
        _drop(sink)


def _drop(sock: socket.socket) -> None:
    """Close `sock` so that a thread blocked reading it wakes up."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
