"""A registry that accepts the connection and never answers: imgvol must give up within
--timeout × (--retry-times + 1) (plus backoff), with one line naming the registry and the
wait, instead of sitting silent for minutes."""

import socket
import subprocess
import threading
import time

import pytest


@pytest.fixture
def silent_registry():
    """127.0.0.1:PORT that accepts every connection and sends nothing, ever."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held, accepted = [], threading.Event()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            accepted.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.getsockname()[1]}", accepted
    finally:
        stop.set()
        srv.close()
        for c in held:
            c.close()
        t.join(timeout=5)


@pytest.mark.parametrize("tls", ["--tls-verify=true", "--tls-verify=false"])
def test_pull_from_a_silent_registry_times_out(imgvol, silent_registry, tls):
    host, accepted = silent_registry
    started = time.monotonic()
    proc = imgvol.popen("pull", "--timeout", "2s", "--retry-times", "1", tls, f"{host}/x:y")
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"imgvol pull still ran after 60 s against a silent registry\nstderr:\n{err}")
    elapsed = time.monotonic() - started
    assert accepted.is_set(), "imgvol never connected to the silent registry"
    assert proc.returncode > 0, f"exit {proc.returncode}\nstderr:\n{err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr:\n{err}"
    assert lines[0].startswith("Error:"), err
    assert host in lines[0] and "2s" in lines[0], f"the error must name the registry and the wait:\n{err}"
    assert "--timeout" in lines[0], err
    # 2 attempts of 2 s plus backoff; far below the minutes it took before.
    assert elapsed < 20, f"took {elapsed:.1f}s"
    assert out.strip() == "", out


def test_bad_timeout_is_refused(imgvol):
    res = imgvol.run("pull", "--timeout", "soon", "127.0.0.1:1/x:y")
    assert res.rc > 0 and "--timeout" in res.stderr, res.describe()
