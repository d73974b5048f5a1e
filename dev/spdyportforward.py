"""The kubelet's side of `kubectl port-forward`: SPDY/3.1 streams, port-forward protocol portforward.k8s.io.

kubectl speaks WebSocket to the API server, which tunnels the SPDY connection through to the kubelet
unchanged (the PortForwardWebsockets feature), so the streams are kubectl's own. For each local
connection kubectl opens an error stream, then a data stream, both carrying the headers `streamtype`
(error or data), `port` and `requestid`. The kubelet connects the data stream to the port in the pod's
network and, when that connection ends, closes both streams (a message on the error stream first when the
port cannot be reached). Framing and header compression are spdyexec's.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

from dev import spdyexec
from dev.spdyexec import FLAG_FIN, RST_STREAM, SYN_STREAM

log = logging.getLogger("podrunner.portforward")

PROTOCOL = "portforward.k8s.io"


class _Forward:
    """One forwarded connection: its two streams and, once both are open, the socket in the pod."""

    def __init__(self):
        self.error: int | None = None
        self.data: int | None = None
        self.port = 0
        self.sock: socket.socket | None = None


def serve_port_forward(conn: spdyexec.Connection, connect: Callable[[int], socket.socket]) -> None:
    """Serves kubectl's streams until the connection ends; ``connect(port)`` opens a connection to the port
    in the pod's network."""
    forwards: dict[str, _Forward] = {}
    by_stream: dict[int, _Forward] = {}
    while (frame := conn.read_frame()) is not None:
        kind, flags, payload = frame
        (stream_id,) = struct.unpack_from(">I", payload)
        stream_id &= 0x7FFFFFFF
        if kind == SYN_STREAM:
            headers = conn.headers(payload[10:])
            forward = forwards.setdefault(headers.get("requestid", str(stream_id)), _Forward())
            forward.port = int(headers.get("port", "0"))
            setattr(forward, "data" if headers.get("streamtype") == "data" else "error", stream_id)
            by_stream[stream_id] = forward
            conn.reply(stream_id)
            if forward.data is not None and forward.error is not None:
                _open(conn, forward, connect)
        elif kind is None and (forward := by_stream.get(stream_id)) and stream_id == forward.data:
            _to_pod(forward, payload[4:], fin=bool(flags & FLAG_FIN))
        elif kind == RST_STREAM and (forward := by_stream.get(stream_id)) and forward.sock:
            forward.sock.close()
        elif not conn.answer_control(kind, payload):
            break
    for forward in by_stream.values():
        if forward.sock:
            forward.sock.close()


def _open(conn: spdyexec.Connection, forward: _Forward, connect: Callable[[int], socket.socket]) -> None:
    """Connects to the port before reading on, so no data of kubectl's arrives before the socket is there."""
    try:
        forward.sock = connect(forward.port)
    except OSError as e:
        message = f"error forwarding port {forward.port} to the pod: {e}"
        _send(conn, forward.error, message.encode(), fin=True)
        _send(conn, forward.data, b"", fin=True)
        return
    threading.Thread(target=_from_pod, args=(conn, forward), daemon=True).start()


def _from_pod(conn: spdyexec.Connection, forward: _Forward) -> None:
    """Copies the pod's side of one connection to its data stream, then closes both streams."""
    try:
        while chunk := forward.sock.recv(spdyexec.CHUNK):
            conn.data(forward.data, chunk)
    except OSError:
        pass  # closed: by the pod, or by kubectl's reset
    _send(conn, forward.data, b"", fin=True)
    _send(conn, forward.error, b"", fin=True)


def _to_pod(forward: _Forward, data: bytes, fin: bool) -> None:
    try:
        if data:
            forward.sock.sendall(data)
        if fin:  # kubectl's side of the connection has ended: so does ours toward the pod
            forward.sock.shutdown(socket.SHUT_WR)
    except (OSError, AttributeError):
        pass  # the pod's side has gone (or never came): its reader closes the streams


def _send(conn: spdyexec.Connection, stream_id: int, data: bytes, fin: bool) -> None:
    try:
        conn.data(stream_id, data, fin=fin)
    except OSError:
        log.info("port-forward: the API server closed the connection")
