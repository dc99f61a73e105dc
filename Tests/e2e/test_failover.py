"""Mounts that outlive their server: each mount's /dev/fuse descriptor is held by a keeper,
which starts a new server on it when one dies; the new server replays INIT, asks the kernel
to resend what the dead one had not answered, and serves on. Readers see a stall, never an
error: 8 concurrent readers (sequential reads, random preads, an mmap, tree walkers) while the
server is SIGKILLed 5 times at random moments, on a tree-like image and a 1 GiB one (with and
without passthrough), during a lazy mount's download, and across a binary swap."""

import errno
import hashlib
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from support.cli import Imgvol
from support.images import T0, pseudo_random
from support.mounts import (FSTYPE, Mounter, is_mounted, kill_mount_processes, mount_entry, pid_alive,
                            wait_until)
from support.oci_layout import Dir, File, Layer
from support.readers import Readers, chunk_digests

MiB = 1 << 20
KILLS = 5


def tree_image(registry, publish):
    """About 3000 small files in 30 directories and a 24 MiB file, in gzip layers (served by
    the server from the layer tar), plus a raw-ish big file stored apart."""
    entries, small = [], {}
    for d in range(30):
        entries.append(Dir(f"d{d:02}", mtime=T0))
        for f in range(100):
            data = f"{d}/{f}\n".encode() * (1 + (d * 100 + f) % 40)
            entries.append(File(f"d{d:02}/f{f:03}.txt", data, mtime=T0))
            small[f"d{d:02}/f{f:03}.txt"] = hashlib.sha256(data).hexdigest()
    mid = pseudo_random(24 * MiB + 5, 61)
    info = publish.image(registry.host, "e2e/failover-tree", "v1",
                         [Layer(entries, "gzip"), Layer([File("mid.bin", mid, mtime=T0)], "gzip")])
    return info, {"mid.bin": chunk_digests(mid)}, small


def big_image(registry, publish):
    data = b"".join(pseudo_random(64 * MiB, 620 + k) for k in range(16))     # 1 GiB
    info = publish.image(registry.host, "e2e/failover-big", "v1",
                         [Layer([File("model.safetensors", data, mtime=T0)], "none"),
                          Layer([File("config.json", '{"model": 1}\n', mtime=T0)], "gzip")])
    digests = chunk_digests(data)
    del data
    return info, {"model.safetensors": digests}, {"config.json": hashlib.sha256(b'{"model": 1}\n').hexdigest()}


def current(mounter, mp) -> dict:
    m = mounter.listed(mp)
    assert m is not None, f"{mp} is not listed by `imgvol mounts`: {mounter.mounts()}"
    return m


def kill_servers_while_reading(mounter, mp, readers, kills=KILLS, seed=2026):
    """SIGKILL the mount's server `kills` times, each at a random moment while the readers
    run; after each, waits for the next server to serve (a new pid in the mount record)."""
    rng = random.Random(seed)
    for k in range(kills):
        readers.wait_for_ops(1)
        time.sleep(rng.uniform(0.05, 0.5))          # a random moment inside the reading
        before = current(mounter, mp)
        os.kill(before["pid"], signal.SIGKILL)
        wait_until(lambda: (lambda m: m and m["pid"] != before["pid"] and pid_alive(m["pid"])
                            and m["restarts"] == k + 1)(mounter.listed(mp)),
                   30, what=f"server #{k + 1} to take over {mp}")
    readers.wait_for_ops(2)


def assert_clean(readers, mounter, mp):
    assert readers.errors == [], "readers saw errors across server kills:\n" + "\n".join(readers.errors[:30])
    assert all(n > 0 for n in readers.ops.values()), readers.ops
    print(f"longest single read across {KILLS} server kills: {readers.longest:.3f} s; ops {readers.ops}")
    e = mount_entry(mp)
    assert e is not None and e.fstype == FSTYPE, e


def unmount_cleanly(mounter, mp):
    m = current(mounter, mp)
    res = mounter.unmount(mp)
    assert res.rc == 0, res.describe()
    assert not is_mounted(mp)
    for pid in (m["keeper"], m["pid"]):
        wait_until(lambda: not pid_alive(pid), 15, what=f"{pid} to exit after unmount")


def test_tree_image_server_kills_are_invisible(mounter, registry, publish):
    info, big, small = tree_image(registry, publish)
    mp = mounter.mount_ok(info.ref)
    first = current(mounter, mp)
    assert isinstance(first["keeper"], int) and pid_alive(first["keeper"]) and first["restarts"] == 0, first
    readers = Readers(mp, big, small).start(8)
    try:
        kill_servers_while_reading(mounter, mp, readers)
    finally:
        readers.stop()
    assert_clean(readers, mounter, mp)
    m = current(mounter, mp)
    assert m["keeper"] == first["keeper"] and m["restarts"] == KILLS, m
    table = mounter.imgvol.ok("mounts").stdout
    assert "RESTARTS" in table and str(KILLS) in table.splitlines()[1].split(), table
    log = (Path(mounter.imgvol.root) / "mounts").glob("*.log")
    text = "".join(p.read_text() for p in log)
    assert text.count("starting server #") == KILLS, text
    unmount_cleanly(mounter, mp)


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "served"])
def test_big_image_server_kills_are_invisible(imgvol, root, base_env, tmp_path, registry, publish, passthrough):
    info, big, small = big_image(registry, publish)
    env = dict(base_env)
    if not passthrough:
        env["IMGVOL_FUSE_PASSTHROUGH"] = "0"
    m = Mounter(Imgvol(imgvol.binary, str(root), env), tmp_path / "pt")
    try:
        mp = m.mount_ok(info.ref)
        readers = Readers(mp, big, small).start(8)
        try:
            kill_servers_while_reading(m, mp, readers)
        finally:
            readers.stop()
        assert_clean(readers, m, mp)
        unmount_cleanly(m, mp)
    finally:
        m.cleanup()


@pytest.fixture
def throttled(registry, make_proxy):
    return make_proxy(registry.host)


def test_lazy_mount_server_kills_during_download(mounter, imgvol, throttled, publish):
    """Killed while the blobs are still arriving: each new server resumes the lazy pull of
    the same digest (the tag could have moved on) and serves on; the image ends up stored."""
    px = throttled
    data = pseudo_random(48 * MiB + 11, 63)
    info = publish.image(px.host, "e2e/failover-lazy", "v1",
                         [Layer([Dir("w", mtime=T0), File("w/model.bin", data, mtime=T0)], "none"),
                          Layer([File("config.json", '{"lazy": 1}\n', mtime=T0)], "none")])
    px.set_faults(throttle=12 * MiB)
    mp = mounter.mountpoint()
    res = mounter.mount(info.ref, mp, "--lazy")
    assert res.rc == 0, res.describe()
    readers = Readers(mp, {"w/model.bin": chunk_digests(data)},
                      {"config.json": hashlib.sha256(b'{"lazy": 1}\n').hexdigest()}).start(8)
    try:
        kill_servers_while_reading(mounter, mp, readers)
    finally:
        readers.stop()
    px.clear_faults()
    assert_clean(readers, mounter, mp)
    try:
        wait_until(lambda: any(im.get("reference") == info.ref for im in imgvol.images()), 120,
                   what="the lazy image to be stored and verified")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{server_logs(imgvol)}")
    with open(os.path.join(mp, "w/model.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    unmount_cleanly(mounter, mp)


def test_binary_swap_moves_mounts_to_the_new_binary(imgvol, root, base_env, tmp_path, registry, publish):
    """An upgrade: the binary at the path the mounts were started from is replaced (a new
    file renamed over it), `imgvol mounts --restart` moves every mount's keeper and server to
    it, and readers see nothing."""
    info, big, small = tree_image(registry, publish)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    installed = bindir / "imgvol"
    shutil.copy2(imgvol.binary, installed)
    cli = Imgvol(str(installed), str(root), base_env)
    m = Mounter(cli, tmp_path / "swap")
    try:
        mps = [m.mount_ok(info.ref), m.mount_ok(info.ref)]
        before = {mp: current(m, mp) for mp in mps}
        old_inode = os.stat(installed).st_ino
        readers = [Readers(mp, big, small, seed=k).start(8) for k, mp in enumerate(mps)]
        try:
            for r in readers:
                r.wait_for_ops(1)
            fresh = bindir / "imgvol.new"
            shutil.copy2(imgvol.binary, fresh)
            os.rename(fresh, installed)               # what a package upgrade does
            assert os.stat(installed).st_ino != old_inode
            res = cli.run("mounts", "--restart", timeout=120)
            assert res.rc == 0, res.describe()
            for mp in mps:
                assert f"{mp}: server {before[mp]['pid']} replaced by" in res.stdout, res.stdout
            for r in readers:
                r.wait_for_ops(2)
        finally:
            for r in readers:
                r.stop()
        for r, mp in zip(readers, mps):
            assert_clean(r, m, mp)
            now = current(m, mp)
            assert now["keeper"] == before[mp]["keeper"], "an upgrade keeps the keeper's pid"
            assert now["pid"] != before[mp]["pid"] and now["restarts"] == 1, now
            for pid in (now["keeper"], now["pid"]):
                exe = os.readlink(f"/proc/{pid}/exe")
                assert exe == str(installed) and os.stat(f"/proc/{pid}/exe").st_ino != old_inode, \
                    f"{pid} still runs the old binary: {exe}"
        for mp in mps:
            unmount_cleanly(m, mp)
    finally:
        m.cleanup()


def test_keeper_alone_killed_leaves_the_server_serving(mounter, registry, publish):
    """A keeper that dies takes nothing with it: the server holds the descriptor too."""
    info, big, small = tree_image(registry, publish)
    mp = mounter.mount_ok(info.ref)
    m = current(mounter, mp)
    os.kill(m["keeper"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(m["keeper"]), 15, what="the keeper to die")
    name = sorted(small)[0]
    assert hashlib.sha256(Path(mp, name).read_bytes()).hexdigest() == small[name]
    assert current(mounter, mp)["pid"] == m["pid"]
    unmount_cleanly(mounter, mp)


def test_keeper_and_server_killed_mount_is_dead(mounter, registry, publish):
    """Only when everything holding the descriptor died is the mount gone (ENOTCONN); a
    standalone mount is then served anew by mounting again."""
    info, _, small = tree_image(registry, publish)
    mp = mounter.mount_ok(info.ref)
    kill_mount_processes(current(mounter, mp))
    probe = iter(range(10 ** 9))
    wait_until(lambda: _errno(lambda: os.stat(os.path.join(mp, f"probe-{next(probe)}"))) == errno.ENOTCONN,
               15, what="ENOTCONN on the dead mount")
    assert mounter.unmount(mp).rc == 0
    mounter.mount_ok(info.ref, mp, "--pull", "never")
    name = sorted(small)[0]
    assert hashlib.sha256(Path(mp, name).read_bytes()).hexdigest() == small[name]


def server_logs(imgvol) -> str:
    return "\n".join(f"--- {p} ---\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((Path(imgvol.root) / "mounts").glob("*.log")))


def _errno(fn):
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def test_damaged_session_state_fails_closed(mounter, registry, publish):
    """A server cannot take a session over from state it cannot read: each attempt fails
    naming the session file, and after five the keeper gives up (the mount answers ENOTCONN,
    never wrong or made-up state); mounting again works."""
    info, _, small = tree_image(registry, publish)
    mp = mounter.mount_ok(info.ref)
    m = current(mounter, mp)
    sessions = list((Path(mounter.imgvol.root) / "mounts").glob("*.session"))
    assert len(sessions) == 1, sessions
    sessions[0].write_bytes(sessions[0].read_bytes()[:40])
    os.kill(m["pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(m["keeper"]), 60, what="the keeper to give up")
    log = server_logs(mounter.imgvol)
    assert f"its session file {sessions[0]} is damaged" in log, log
    assert "giving up" in log, log
    assert _errno(lambda: os.stat(os.path.join(mp, "probe"))) == errno.ENOTCONN
    assert mounter.unmount(mp).rc == 0
    mounter.mount_ok(info.ref, mp, "--pull", "never")
    name = sorted(small)[0]
    assert hashlib.sha256(Path(mp, name).read_bytes()).hexdigest() == small[name]
