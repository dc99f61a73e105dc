"""A loopback reverse proxy in front of a registry, with fault injection.

    with Registry() as reg, Proxy(reg.host) as px:
        ref = f"{px.host}/demo/app:v1"          # clients talk to the proxy
        px.set_faults(drop_after=4096, drop_first=1)    # cut each blob body once
        ...
        px.range_requests()                      # GETs that carried a Range header
        px.full_blob_gets(digest)                # complete 200 GETs of one blob

Everything is forwarded as is: request headers (incl. Range, Authorization),
status, response headers (incl. WWW-Authenticate, Location: redirects are not
followed).  Only hop-by-hop headers are dropped.  Plain HTTP, 127.0.0.1 only.

Faults apply to GETs of ``/v2/<name>/blobs/<digest>``:
  * ``drop_after=N, drop_first=K``: for the first K GETs of each blob, send the
    upstream headers and N bytes of the body, then close the connection.
  * ``throttle=B``: send blob bodies at about B bytes/second.
  * ``only=[digest, ...]``: restrict faults to these blobs.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "proxy-connection"}
BLOB_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[a-fA-F0-9]+)$")
MANIFEST_RE = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")


@dataclass
class Record:
    method: str
    path: str
    headers: Dict[str, str]
    status: Optional[int] = None
    response_headers: Dict[str, str] = field(default_factory=dict)
    content_length: Optional[int] = None
    bytes_sent: int = 0
    complete: bool = False         # the whole response body was delivered
    dropped: bool = False          # the proxy cut it on purpose
    client_gone: bool = False      # the client closed the connection first
    start: float = 0.0
    end: Optional[float] = None

    @property
    def range(self) -> Optional[str]:
        for k, v in self.headers.items():
            if k.lower() == "range":
                return v
        return None

    @property
    def blob_digest(self) -> Optional[str]:
        m = BLOB_RE.match(self.path)
        return m.group("digest") if m else None


class Proxy:
    def __init__(self, upstream: str, drop_after: Optional[int] = None, drop_first: int = 1,
                 throttle: Optional[int] = None, only: Optional[List[str]] = None,
                 upstream_timeout: float = 60):
        self.upstream = upstream          # "127.0.0.1:PORT"
        self.upstream_timeout = upstream_timeout
        self.requests: List[Record] = []
        self._lock = threading.Lock()
        self._blob_get_counts: Dict[str, int] = {}
        self.drop_after = drop_after
        self.drop_first = drop_first
        self.throttle = throttle
        self.only = set(only) if only else None
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None
        self.host: Optional[str] = None

    # -- control ---------------------------------------------------------------------------
    def set_faults(self, drop_after: Optional[int] = None, drop_first: int = 1,
                   throttle: Optional[int] = None, only: Optional[List[str]] = None) -> None:
        with self._lock:
            self.drop_after, self.drop_first, self.throttle = drop_after, drop_first, throttle
            self.only = set(only) if only else None
            self._blob_get_counts.clear()

    def clear_faults(self) -> None:
        self.set_faults()

    def reset(self) -> None:
        """Forget recorded requests and per-blob GET counts (faults stay)."""
        with self._lock:
            self.requests.clear()
            self._blob_get_counts.clear()

    # -- queries ---------------------------------------------------------------------------
    def snapshot(self) -> List[Record]:
        with self._lock:
            return list(self.requests)

    def counts(self) -> Dict[str, int]:
        """Request count per path (all methods)."""
        out: Dict[str, int] = {}
        for r in self.snapshot():
            out[r.path] = out.get(r.path, 0) + 1
        return out

    def blob_gets(self, digest: Optional[str] = None) -> List[Record]:
        return [r for r in self.snapshot() if r.method == "GET" and r.blob_digest
                and (digest is None or r.blob_digest == digest)]

    def full_blob_gets(self, digest: str) -> List[Record]:
        """Complete, un-ranged 200 GETs of a blob."""
        return [r for r in self.blob_gets(digest)
                if r.status == 200 and r.range is None and r.complete]

    def range_requests(self) -> List[Record]:
        return [r for r in self.snapshot() if r.range is not None]

    def manifest_requests(self) -> List[Record]:
        return [r for r in self.snapshot() if MANIFEST_RE.match(r.path)]

    def blob_bytes_sent(self, digest: Optional[str] = None) -> int:
        return sum(r.bytes_sent for r in self.blob_gets(digest))

    def settle(self, timeout: float = 5) -> bool:
        """Wait until every recorded request has finished on the proxy's side (call after
        the client process exited, before asserting on records)."""
        return self.wait_for(lambda p: all(r.end is not None for r in p.snapshot()), timeout)

    def wait_for(self, predicate: Callable[["Proxy"], bool], timeout: float = 30,
                 interval: float = 0.02) -> bool:
        """Poll predicate(self) until true or timeout; returns the last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Proxy":
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 120

            def log_message(self, fmt, *args):
                pass

            def _read_body(self) -> Optional[bytes]:
                te = self.headers.get("Transfer-Encoding", "")
                if "chunked" in te.lower():
                    chunks = []
                    while True:
                        line = self.rfile.readline()
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                n = self.headers.get("Content-Length")
                if n is not None:
                    return self.rfile.read(int(n))
                return None

            def _proxy(self):
                rec = Record(self.command, urllib.parse.urlsplit(self.path).path,
                             {k: v for k, v in self.headers.items()}, start=time.time())
                with proxy._lock:
                    proxy.requests.append(rec)
                body = self._read_body()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                host, _, port = proxy.upstream.partition(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=proxy.upstream_timeout)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for k, v in headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                except Exception as e:
                    conn.close()
                    rec.status = 502
                    msg = f"proxy: upstream error: {e}".encode()
                    self.send_response(502)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    rec.end = time.time()
                    return
                try:
                    self._relay(rec, resp)
                finally:
                    conn.close()
                    rec.end = time.time()

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (ConnectionResetError, BrokenPipeError, socket.timeout):
                    self.close_connection = True

            def _relay(self, rec: Record, resp: http.client.HTTPResponse):
                rec.status = resp.status
                rec.response_headers = {k: v for k, v in resp.getheaders()}
                digest = rec.blob_digest if self.command == "GET" else None
                drop_after = throttle = None
                if digest and 200 <= resp.status < 300:
                    with proxy._lock:
                        n = proxy._blob_get_counts.get(digest, 0) + 1
                        proxy._blob_get_counts[digest] = n
                        applies = proxy.only is None or digest in proxy.only
                        if applies and proxy.drop_after is not None and n <= proxy.drop_first:
                            drop_after = proxy.drop_after
                        if applies:
                            throttle = proxy.throttle
                length = resp.getheader("Content-Length")
                chunked = "chunked" in (resp.getheader("Transfer-Encoding") or "").lower()
                if self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200:
                    body_iter_len = 0
                elif length is not None and not chunked:
                    body_iter_len = int(length)
                else:
                    body_iter_len = None   # unknown: buffer it
                self.send_response_only(resp.status, resp.reason)
                buffered = None
                if body_iter_len is None:
                    buffered = resp.read()
                    body_iter_len = len(buffered)
                rec.content_length = body_iter_len
                for k, v in resp.getheaders():
                    if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                        continue
                    self.send_header(k, v)
                if self.command == "HEAD" and length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(body_iter_len))
                self.end_headers()
                if self.command == "HEAD":
                    rec.complete = True
                    return
                remaining = body_iter_len
                t0 = time.monotonic()
                chunk = 16384
                if throttle:
                    chunk = max(512, min(chunk, throttle // 20))
                try:
                    while remaining > 0:
                        want = min(chunk, remaining)
                        if drop_after is not None:
                            left = drop_after - rec.bytes_sent
                            if left <= 0:
                                rec.dropped = True
                                self.wfile.flush()
                                self.close_connection = True
                                try:
                                    self.connection.shutdown(socket.SHUT_RDWR)
                                except OSError:
                                    pass
                                return
                            want = min(want, left)
                        if buffered is not None:
                            data = buffered[rec.bytes_sent:rec.bytes_sent + want]
                        else:
                            data = resp.read(want)
                        if not data:
                            break
                        self.wfile.write(data)
                        rec.bytes_sent += len(data)
                        remaining -= len(data)
                        if throttle:
                            due = t0 + rec.bytes_sent / throttle
                            delay = due - time.monotonic()
                            if delay > 0:
                                time.sleep(delay)
                    self.wfile.flush()
                    rec.complete = remaining == 0
                    if not rec.complete:
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
                    rec.client_gone = True
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="e2e-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
