"""On a terminal, a download that gets no bytes for 5 s says so on the progress display's
total line, redrawn by its timer while no progress events come, and says no more of it once
the bytes come again."""

import http.client
import http.server
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time

from support.oci_layout import File, Layer

HELD = 64 * 1024                 # bytes of the layer sent before the stall


class StallingProxy:
    """Forwards to a registry; GETs of one blob send HELD bytes, then wait for release()."""

    def __init__(self, upstream: str, digest: str):
        self.upstream, self.digest = upstream, digest
        self.released = threading.Event()
        self.stalled = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_HEAD(self):
                self._forward()

            def do_GET(self):
                self._forward()

            def _forward(self):
                host, _, port = proxy.upstream.partition(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(body))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command == "HEAD":
                    return
                cut = HELD if self.path.endswith("/blobs/" + proxy.digest) and resp.status < 300 else len(body)
                self.wfile.write(body[:cut])
                self.wfile.flush()
                if cut < len(body):
                    proxy.stalled.set()
                    proxy.released.wait(120)
                    self.wfile.write(body[cut:])
                    self.wfile.flush()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self):
        self.released.set()

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Terminal:
    """A process whose stderr is a pseudo-terminal; everything it drew is kept in `text`."""

    def __init__(self, argv, env):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.text = ""

    def wait_for(self, pattern: str, timeout: float) -> "re.Match | None":
        """Reads until `pattern` appears in the output (or the process ends, or time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                return re.search(pattern, self.text)

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            pass
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:                       # EIO: the process closed its end
            return False
        if not data:
            return False
        self.text += data.decode("utf-8", "replace")
        return True

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        os.close(self.master)


def frames(text: str):
    """The lines drawn, each as the terminal shows it (escape sequences dropped)."""
    return [re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", line).strip() for line in re.split(r"\x1b\[2K|\r?\n", text)]


def test_a_stalled_download_says_so_on_a_terminal(imgvol, registry, publish):
    layer = Layer([File("big", os.urandom(4 << 20))])
    info = publish.image(registry.host, "e2e/stall", "v1", [layer])
    proxy = StallingProxy(registry.host, layer.digest)
    term = None
    try:
        ref = f"{proxy.host}/e2e/stall:v1"
        term = Terminal(imgvol.argv("pull", "--tls-verify=false", "--timeout", "600s", ref), imgvol.env)
        assert proxy.stalled.wait(60), f"the layer was never requested\n{term.text}"
        found = term.wait_for(r"total [^\n]*\(stalled: no bytes for (\d+) s\)", timeout=60)
        assert found, f"no stall shown on the total line after 60 s:\n{term.text!r}"
        assert int(found.group(1)) >= 5, found.group(0)
        # The timer keeps counting while nothing comes.
        later = term.wait_for(r"\(stalled: no bytes for (?!%s )(\d+) s\)" % found.group(1), timeout=30)
        assert later, f"the stall's seconds were not redrawn:\n{term.text!r}"

        proxy.release()
        assert term.wait_exit(timeout=120) == 0, term.text
        assert info.manifest_digest in term.text
        totals = [f for f in frames(term.text) if f.startswith("total ")]
        assert totals and "stalled" not in totals[-1], totals[-3:]
    finally:
        if term:
            term.close()
        proxy.stop()
