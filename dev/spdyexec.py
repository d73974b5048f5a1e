"""The kubelet's side of `kubectl exec` (and so of `kubectl cp`): SPDY/3.1 streams, remote command protocol v4.

kubectl speaks WebSocket to the API server, which translates it to SPDY toward the kubelet (the
TranslateStreamCloseWebsocketRequests feature, on by default since 1.30). The API server opens one stream
per channel — error, then stdin, stdout and stderr as the request asks — each named by a `streamtype`
header, and waits for each stream's reply before opening the next. The kubelet copies the channels to the
command and, when it exits, writes a JSON Status on the error stream (with the exit code when it is not 0)
and closes every stream. SPDY's flow control is left out: Kubernetes' SPDY library neither sends nor
honours window updates.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable
from typing import BinaryIO

log = logging.getLogger("podrunner.exec")

PROTOCOL = "v4.channel.k8s.io"
VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY, HEADERS = 1, 2, 3, 6, 7, 8
FLAG_FIN = 0x01
CHUNK = 32 * 1024

# SPDY/3's zlib dictionary for header blocks (the SPDY/3 draft, section 2.6.10.1): length-prefixed
# words, then a run of status lines, dates and media types.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from "
    "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK"] + "version HTTP/1.1 url public set-cookie keep-alive origin".split()
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


def streams_requested(query: dict[str, list[str]]) -> set[str]:
    """The stream types the API server will open for an exec request's query."""
    wanted = {"error"}
    for stream, param in (("stdin", "input"), ("stdout", "output"), ("stderr", "error")):
        if query.get(param) == ["1"] or query.get(param) == ["true"]:
            wanted.add(stream)
    return wanted


def exit_status(code: int) -> dict:
    """The Status the kubelet writes on the error stream when the command has exited."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class Connection:
    """One upgraded SPDY connection, the server's end."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO):
        self.reader, self.writer = reader, writer
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self.write_lock = threading.Lock()

    def read_frame(self) -> tuple[int | None, int, bytes] | None:
        """(control frame type or None for data, flags, payload); None when the peer has gone."""
        try:
            head = self.reader.read(8)
            if len(head) < 8:
                return None
            first, flags_and_length = struct.unpack(">II", head)
            payload = self.reader.read(flags_and_length & 0xFFFFFF)
        except (OSError, ValueError):  # closed under us
            return None
        if first & 0x80000000:
            return first & 0xFFFF, flags_and_length >> 24, payload
        return None, flags_and_length >> 24, head[:4] + payload  # data: its stream id, then the bytes

    def headers(self, block: bytes) -> dict[str, str]:
        """Decodes a header block; every block passes through the one zlib stream of the connection."""
        raw = self.inflate.decompress(block)
        (count,), at, found = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", raw, at)
            name = raw[at + 4:at + 4 + size].decode()
            at += 4 + size
            (size,) = struct.unpack_from(">I", raw, at)
            found[name] = raw[at + 4:at + 4 + size].decode()
            at += 4 + size
        return found

    def _send(self, data: bytes) -> None:
        with self.write_lock:
            self.writer.write(data)
            self.writer.flush()

    def answer_control(self, kind: int | None, payload: bytes) -> bool:
        """What every user of the connection owes its control frames: a PING echoed, a HEADERS block read
        (it keeps the header zlib stream in step); False once the peer has said GOAWAY."""
        if kind == PING:
            self.control(PING, payload)
        elif kind == HEADERS:
            self.headers(payload[4:])
        return kind != GOAWAY

    def control(self, kind: int, payload: bytes, flags: int = 0) -> None:
        self._send(struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload)

    def reply(self, stream_id: int) -> None:
        empty = self.deflate.compress(struct.pack(">I", 0)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.control(SYN_REPLY, struct.pack(">I", stream_id) + empty)

    def data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        self._send(struct.pack(">II", stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + data)

    def go_away(self, last_stream: int) -> None:
        self.control(GOAWAY, struct.pack(">II", last_stream, 0))


def serve_exec(conn: Connection, wanted: set[str], start: Callable[[bool], subprocess.Popen]) -> None:
    """Accepts the API server's streams, runs the command (``start(with_stdin)``), relays its channels and
    reports its exit status; a connection that drops ends the command."""
    ids: dict[str, int] = {}
    while set(ids) != wanted:
        frame = conn.read_frame()
        if frame is None:
            return
        kind, _, payload = frame
        if kind == SYN_STREAM:
            (stream_id,) = struct.unpack_from(">I", payload)
            kind_of_stream = conn.headers(payload[10:]).get("streamtype", "")
            ids[kind_of_stream] = stream_id & 0x7FFFFFFF
            conn.reply(ids[kind_of_stream])
        elif kind == PING:
            conn.control(PING, payload)
    proc = start("stdin" in ids)
    pumps = [threading.Thread(target=_pump, args=(conn, ids[name], pipe), daemon=True)
             for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)) if name in ids]
    for pump in pumps:
        pump.start()
    threading.Thread(target=_receive, args=(conn, ids, proc), daemon=True).start()
    code = proc.wait()
    for pump in pumps:
        pump.join()
    try:
        conn.data(ids["error"], json.dumps(exit_status(code)).encode(), fin=True)
        conn.go_away(max(ids.values()))
    except OSError:
        log.info("exec: the API server closed the connection before the exit status")


def _pump(conn: Connection, stream_id: int, pipe: BinaryIO) -> None:
    """Copies one output channel of the command to its stream, then closes the stream."""
    try:
        while chunk := os.read(pipe.fileno(), CHUNK):
            conn.data(stream_id, chunk)
        conn.data(stream_id, b"", fin=True)
    except OSError:
        pass  # the connection is gone; _receive ends the command


def _receive(conn: Connection, ids: dict[str, int], proc: subprocess.Popen) -> None:
    """Feeds the stdin stream to the command and answers pings, until the connection ends."""
    stdin = ids.get("stdin")
    while (frame := conn.read_frame()) is not None:
        kind, flags, payload = frame
        (stream_id,) = struct.unpack_from(">I", payload)
        if kind is None and stream_id == stdin:
            _feed(proc.stdin, payload[4:], close=bool(flags & FLAG_FIN))
        elif kind == RST_STREAM and stream_id == stdin:
            _feed(proc.stdin, b"", close=True)
        elif not conn.answer_control(kind, payload):
            break
    if proc.poll() is None:
        proc.kill()


def _feed(stdin: BinaryIO, data: bytes, close: bool) -> None:
    try:
        stdin.write(data)
        stdin.flush()
        if close:
            stdin.close()
    except (BrokenPipeError, ValueError):
        pass  # the command has stopped reading (or exited): like a closed pipe, the rest is dropped
