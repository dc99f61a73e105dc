"""Crash safety, measured (issue 20, item 7).

SIGKILL at pseudo-random (seeded, so repeatable) moments spread over a command's measured
wall time: `imgvol pull`, a lazy mount's background download, `imgvol rm` and `imgvol prune`.
After every kill: `imgvol check` finds no damage, every image `imgvol images` lists passes
`check` on its own (nothing unverified is listed), and a fresh pull completes with the same
digest. A small tmpfs as --root filled mid-pull (ENOSPC) fails with one clear error and
leaves a store that `check` passes and that works once there is room again.

A kill takes the whole process group (every command starts in its own session) and waits
for each member's exit on a pidfd, never a sleep. Mounts, processes and the tmpfs are undone
in teardown, pass or fail.
"""

from __future__ import annotations

import re
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from support.cli import Imgvol, run as run_cmd
from support.images import T0, base_layer, pseudo_random
from support.mounts import is_mounted, lazy_umount, sha256_file, wait_until
from support.oci_layout import Dir, File, Layer

MiB = 1 << 20
MOMENTS = 20
LAZY_MOMENTS = 10
MIN_INTERRUPTED = 3


# -- processes: kill a whole group and wait for every member on a pidfd ------------------------

def _pgrp(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def group_members(pgid: int) -> List[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and _pgrp(int(d)) == pgid]


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Block on a pidfd until pid has exited (any process, child or not)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(int(timeout * 1000)))
    finally:
        os.close(fd)


def kill_group(pgid: int, timeout: float = 30) -> None:
    """SIGKILL every process of the group and wait until none is left."""
    assert pgid != os.getpgrp(), "refusing to kill the test's own process group"
    deadline = time.monotonic() + timeout
    while True:
        members = group_members(pgid)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not members:
            return
        for pid in members:
            assert wait_pid_exit(pid, max(0.1, deadline - time.monotonic())), \
                f"pid {pid} of process group {pgid} survived SIGKILL"
        assert time.monotonic() < deadline, f"process group {pgid} keeps running"


class Outcome:
    def __init__(self, rc: int, out: str, err: str, at: float):
        self.rc, self.stdout, self.stderr, self.at = rc, out, err, at

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL

    def describe(self) -> str:
        return f"rc {self.rc} (kill at {self.at:.3f}s)\n--- stdout ---\n{self.stdout[-2000:]}" \
               f"\n--- stderr ---\n{self.stderr[-2000:]}"


def run_killed_at(imgvol: Imgvol, args, at: float, logdir: Path, timeout: float = 120) -> Outcome:
    """Start `imgvol ARGS` in its own session; if it is still running `at` seconds later,
    SIGKILL its process group. Returns once every process of the group has exited."""
    logdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logdir / "stdout", logdir / "stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(imgvol.argv(*args), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, env=imgvol.env, start_new_session=True)
    try:
        fd = os.pidfd_open(proc.pid)
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            if not p.poll(int(at * 1000)):
                kill_group(proc.pid)
        finally:
            os.close(fd)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
            proc.wait(timeout=30)
        else:
            kill_group(proc.pid)           # children it may have left in the group
    return Outcome(proc.returncode, out_path.read_text(errors="replace"),
                   err_path.read_text(errors="replace"), at)


def moments(seed: int, n: int, span: float, lo: float = 0.0, hi: float = 1.1) -> List[float]:
    """n kill moments spread over [lo, hi) x span: one seeded draw in each of n equal strata,
    shuffled so consecutive runs do not simply grow."""
    rnd = random.Random(seed)
    width = (hi - lo) / n
    out = [span * (lo + width * (i + rnd.random())) for i in range(n)]
    rnd.shuffle(out)
    return out


def timed(fn):
    t0 = time.monotonic()
    res = fn()
    return res, time.monotonic() - t0


# -- store assertions -------------------------------------------------------------------------

def store_listing(root) -> str:
    """layers/, blobs/, images/ and tmp/ of a store: path, size (for failure messages)."""
    root = Path(root)
    rows = []
    for top in ("images", "layers", "blobs", "tmp", "damaged"):
        for p in sorted((root / top).rglob("*")) if (root / top).exists() else []:
            kind = "dir" if p.is_dir() else str(p.stat().st_size) if p.exists() else "?"
            rows.append(f"  {p.relative_to(root)} {kind}")
    return "\n".join(rows)


def check_clean(imgvol: Imgvol, context: str, *refs: str) -> dict:
    res = imgvol.run("check", "--format", "json", *refs)
    try:
        out = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"{context}: check --format json is not JSON\n{res.describe()}")
    assert res.rc == 0 and out["checked"]["damage"] == [], \
        f"{context}: check found damage\n{res.describe()}"
    return out


def listed_all_verified(imgvol: Imgvol, context: str, expected: dict) -> List[str]:
    """Every image `images` lists has the digest its name was pulled as and passes check."""
    images = imgvol.images()
    refs = []
    for im in images:
        ref = im.get("reference")
        assert ref in expected, f"{context}: unexpected image listed: {im}"
        assert im.get("digest") == expected[ref], f"{context}: {ref} listed as {im}"
        res = imgvol.run("check", ref)
        assert res.rc == 0, f"{context}: listed image {ref} fails check\n{res.describe()}"
        refs.append(ref)
    return refs


def after_kill(imgvol: Imgvol, context: str, expected: dict) -> Tuple[List[str], str]:
    """check and images after a kill; returns what is listed and a context for the steps
    after, naming the store as the kill left it."""
    check_clean(imgvol, context)
    listed = listed_all_verified(imgvol, context, expected)
    return listed, f"{context} (the store as the kill left it:\n{store_listing(imgvol.root)}\n)"


def pull_ok(imgvol: Imgvol, ref: str, digest: str, context: str) -> None:
    res = imgvol.run("pull", ref, "--tls-verify=false", "-q")
    assert res.rc == 0 and res.last_line == digest, f"{context}: pull again\n{res.describe()}"


def assert_some_interrupted(outcomes: List[Outcome], what: str) -> None:
    killed = sum(o.killed for o in outcomes)
    assert killed >= MIN_INTERRUPTED, (
        f"only {killed} of {len(outcomes)} kills of {what} interrupted it: the test would pass "
        f"vacuously; rcs: {[o.rc for o in outcomes]}")
    for o in outcomes:
        assert o.killed or o.rc == 0, f"{what} that was not killed failed:\n{o.describe()}"


def report(what: str, outcomes: List[Outcome], span: float) -> None:
    killed = sum(o.killed for o in outcomes)
    print(f"{what}: {killed}/{len(outcomes)} interrupted, {len(outcomes) - killed} finished; "
          f"measured {span:.3f}s")


# -- images -----------------------------------------------------------------------------------

def pull_layers(seed: int = 1) -> List[Layer]:
    """A gzip layer with a 6 MiB file (stored apart: the big-file split path), a raw
    uncompressed layer and a small gzip layer on top."""
    return [
        Layer([Dir("data", mtime=T0), File("data/big.bin", pseudo_random(6 * MiB, seed), mtime=T0),
               File("data/small.txt", "small\n" * 100, mtime=T0)], "gzip"),
        Layer([Dir("raw", mtime=T0), File("raw/blob.bin", pseudo_random(2 * MiB + 17, seed + 1),
                                          mtime=T0),
               File("raw/note.txt", "raw layer\n", mtime=T0)], "none"),
        Layer([Dir("etc", mtime=T0), File("etc/os-release", f"ID=crash{seed}\n", mtime=T0)],
              "gzip"),
    ]


@pytest.fixture
def throttled(registry, make_proxy):
    """A proxy in front of the registry; the tests throttle blob bodies through it so a pull
    lasts long enough (about 1.5-2 s) for most kill moments to land inside it."""
    return make_proxy(registry.host)


# -- 1. kill pull ------------------------------------------------------------------------------

def test_kill_pull_at_random_moments(imgvol, throttled, publish, tmp_path):
    px = throttled
    info = publish.image(px.host, "e2e/crash-pull", "v1", pull_layers())
    expected = {info.ref: info.manifest_digest}
    throttle = 6 * MiB

    def reset():
        imgvol.ok("rm", info.ref)
        imgvol.ok("prune")
        assert imgvol.images() == []

    px.set_faults(throttle=throttle)
    res, span = timed(lambda: imgvol.run("pull", info.ref, "--tls-verify=false", "-q"))
    assert res.rc == 0 and res.last_line == info.manifest_digest, res.describe()
    check_clean(imgvol, "first pull")
    reset()

    outcomes = []
    for i, at in enumerate(moments(20260107, MOMENTS, span)):
        ctx = f"pull killed at {at:.3f}s of {span:.3f}s (#{i})"
        px.set_faults(throttle=throttle)
        o = run_killed_at(imgvol, ["pull", info.ref, "--tls-verify=false", "-q"], at,
                          tmp_path / "runs" / f"pull{i}")
        outcomes.append(o)
        px.clear_faults()
        listed, ctx = after_kill(imgvol, ctx, expected)
        if not o.killed:
            assert o.rc == 0 and listed == [info.ref], f"{ctx}: finished\n{o.describe()}"
        pull_ok(imgvol, info.ref, info.manifest_digest, ctx)
        check_clean(imgvol, ctx + ", pulled again")
        reset()
    report("pull", outcomes, span)
    assert_some_interrupted(outcomes, "pull")


# -- 1b. kill a lazy mount's download ------------------------------------------------------------

def lazy_layers() -> List[Layer]:
    """Uncompressed tar layers only: `mount --lazy` serves them by Range requests while the
    background download runs (compressed layers would be pulled in full first)."""
    return [
        Layer([Dir("w", mtime=T0), File("w/big.bin", pseudo_random(6 * MiB + 3, 21), mtime=T0),
               File("w/mid.bin", pseudo_random(MiB + 1, 22), mtime=T0)], "none"),
        Layer([File("config.json", '{"layers": 2}\n', mtime=T0)], "none"),
    ]


def server_pid(mounter, mp) -> int:
    m = mounter.listed(mp)
    assert m and isinstance(m.get("pid"), int), f"{mp} not listed by `imgvol mounts`: {m}"
    return m["pid"]


def kill_server(pid: int) -> None:
    """SIGKILL a mount server (its group when it leads one) and wait for its exit."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid == pid and pgid != os.getpgrp():
        kill_group(pgid)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert wait_pid_exit(pid, 30), f"mount server {pid} survived SIGKILL"


def mounter_log(imgvol, mp) -> str:
    logs = sorted(Path(imgvol.root, "mounts").glob("*.log"))
    return "\n".join(f"--- {p} ---\n{p.read_text(errors='replace')[-2000:]}" for p in logs)


def drop_mount(imgvol, mp) -> None:
    if is_mounted(mp):
        imgvol.run("unmount", mp, "--force", timeout=30)
    lazy_umount(mp)
    assert not is_mounted(mp), f"{mp} still mounted after unmount --force and umount -l"


def test_kill_lazy_mount_download_at_random_moments(imgvol, throttled, publish, mounter):
    px = throttled
    info = publish.image(px.host, "e2e/crash-lazy", "v1", lazy_layers())
    expected = {info.ref: info.manifest_digest}
    throttle = 4 * MiB
    want = {"w/big.bin": pseudo_random(6 * MiB + 3, 21)}

    def verified():
        return any(im.get("reference") == info.ref for im in imgvol.images())

    def reset():
        imgvol.ok("rm", info.ref)
        imgvol.ok("prune")
        assert imgvol.images() == []

    # Measure: from `mount --lazy` returning to the image being recorded as verified.
    px.set_faults(throttle=throttle)
    mp = mounter.mountpoint()
    res = mounter.mount(info.ref, mp, "--lazy")
    assert res.rc == 0, res.describe()
    t0 = time.monotonic()
    wait_until(verified, timeout=60, what="the lazy download to complete")
    span = time.monotonic() - t0
    with open(os.path.join(mp, "w/big.bin"), "rb") as f:
        assert f.read() == want["w/big.bin"]
    assert mounter.unmount(mp).rc == 0
    check_clean(imgvol, "first lazy mount")
    reset()

    outcomes = []
    for i, at in enumerate(moments(20260108, LAZY_MOMENTS, span)):
        ctx = f"lazy server killed at {at:.3f}s of {span:.3f}s (#{i})"
        px.set_faults(throttle=throttle)
        mp = mounter.mountpoint()
        res = mounter.mount(info.ref, mp, "--lazy")
        assert res.rc == 0, f"{ctx}\n{res.describe()}"
        pid = server_pid(mounter, mp)
        died = wait_pid_exit(pid, at)        # a timer that also notices an early death
        assert not died, f"{ctx}: the mount server exited on its own\n{mounter_log(imgvol, mp)}"
        finished = verified()
        if finished:
            outcomes.append(Outcome(0, "", "", at))
            assert mounter.unmount(mp).rc == 0
        else:
            # The whole mount dies: its keeper (which would start the server again) first.
            keeper = (mounter.listed(mp) or {}).get("keeper")
            if isinstance(keeper, int):
                kill_server(keeper)
            kill_server(pid)
            outcomes.append(Outcome(-signal.SIGKILL, "", "", at))
            drop_mount(imgvol, mp)
        px.clear_faults()
        listed, ctx = after_kill(imgvol, ctx, expected)
        if finished:
            assert listed == [info.ref], ctx
        pull_ok(imgvol, info.ref, info.manifest_digest, ctx)
        check_clean(imgvol, ctx + ", pulled again")
        reset()
    report("lazy download", outcomes, span)
    assert_some_interrupted(outcomes, "the lazy download")


# -- 1c. kill rm and prune -----------------------------------------------------------------------

SHARED = base_layer(size=2 * MiB + 5, seed=31)


def gc_images(registry, publish):
    """A and P1 have unique layers (one with a big file stored apart, one raw); every image
    shares SHARED with B, the image that must stay intact throughout."""
    def unique(seed):
        return [Layer([Dir(f"u{seed}", mtime=T0),
                       File(f"u{seed}/big.bin", pseudo_random(3 * MiB, seed), mtime=T0)], "gzip"),
                Layer([File(f"raw{seed}.bin", pseudo_random(MiB // 2, seed + 1), mtime=T0)],
                      "none")] + \
            [Layer([File(f"l{seed}-{k}.txt", f"{seed}/{k}\n" * 50, mtime=T0)], "gzip")
             for k in range(6)]
    b_data = pseudo_random(1536 * 1024 + 9, 41)
    b = publish.image(registry.host, "e2e/crash-b", "v1",
                      [SHARED, Layer([File("b.bin", b_data, mtime=T0)], "gzip")])
    a = publish.image(registry.host, "e2e/crash-a", "v1", [SHARED] + unique(50))
    return a, b, b_data


def b_reads_correctly(mounter, b, b_data, ctx) -> None:
    mp = mounter.mount_ok(b.ref, None, "--pull", "never")
    try:
        with open(os.path.join(mp, "b.bin"), "rb") as f:
            assert f.read() == b_data, f"{ctx}: b.bin read wrong through the mount"
        with open(os.path.join(mp, "shared/blob.bin"), "rb") as f:
            assert f.read() == pseudo_random(2 * MiB + 5, 31), f"{ctx}: shared layer wrong"
    finally:
        assert mounter.unmount(mp).rc == 0


def test_kill_rm_at_random_moments(imgvol, registry, publish, mounter, tmp_path):
    a, b, b_data = gc_images(registry, publish)
    expected = {a.ref: a.manifest_digest, b.ref: b.manifest_digest}
    imgvol.pull(b.ref)
    imgvol.pull(a.ref)
    res, span = timed(lambda: imgvol.run("rm", a.ref))
    assert res.rc == 0, res.describe()
    imgvol.pull(a.ref)

    outcomes = []
    for i, at in enumerate(moments(20260109, MOMENTS, span)):
        ctx = f"rm killed at {at:.3f}s of {span:.3f}s (#{i})"
        o = run_killed_at(imgvol, ["rm", a.ref], at, tmp_path / "runs" / f"rm{i}")
        outcomes.append(o)
        listed, ctx = after_kill(imgvol, ctx, expected)
        assert b.ref in listed, f"{ctx}: B is gone"
        if not o.killed:
            assert listed == [b.ref], f"{ctx}: rm finished but A is listed"
        b_reads_correctly(mounter, b, b_data, ctx)
        pull_ok(imgvol, a.ref, a.manifest_digest, ctx)
        check_clean(imgvol, ctx + ", pulled again")
    report("rm", outcomes, span)
    assert_some_interrupted(outcomes, "rm")


def retag(registry, repo: str, tag: str, info) -> None:
    status, _, body = registry.request("PUT", f"/v2/{repo}/manifests/{tag}",
                                       headers={"Content-Type": info.manifest_media_type},
                                       data=info.manifest_bytes)
    assert status == 201, (status, body)


def test_kill_prune_at_random_moments(imgvol, registry, publish, mounter, tmp_path):
    """prune with work to do: a tag moved from P1 to P2, so P1's record and unique layers
    are garbage (SHARED stays, B needs it)."""
    p1, b, b_data = gc_images(registry, publish)
    p2 = publish.image(registry.host, "e2e/crash-a", "two",
                       [SHARED, Layer([File("p2.txt", "p2\n", mtime=T0)], "gzip")])
    ref = p1.ref
    imgvol.pull(b.ref)

    def p1_then_p2():
        retag(registry, "e2e/crash-a", "v1", p1)
        assert imgvol.pull(ref) == p1.manifest_digest
        retag(registry, "e2e/crash-a", "v1", p2)
        assert imgvol.pull(ref) == p2.manifest_digest

    p1_then_p2()
    res, span = timed(lambda: imgvol.run("prune"))
    assert res.rc == 0, res.describe()

    expected = {ref: p2.manifest_digest, b.ref: b.manifest_digest}
    outcomes = []
    for i, at in enumerate(moments(20260110, MOMENTS, span)):
        ctx = f"prune killed at {at:.3f}s of {span:.3f}s (#{i})"
        p1_then_p2()
        o = run_killed_at(imgvol, ["prune"], at, tmp_path / "runs" / f"prune{i}")
        outcomes.append(o)
        listed, ctx = after_kill(imgvol, ctx, expected)
        assert sorted(listed) == sorted([ref, b.ref]), f"{ctx}: listed {listed}"
        b_reads_correctly(mounter, b, b_data, ctx)
        # The pruned image comes back in full.
        retag(registry, "e2e/crash-a", "v1", p1)
        pull_ok(imgvol, ref, p1.manifest_digest, ctx)
        check_clean(imgvol, ctx + ", P1 pulled again")
    report("prune", outcomes, span)
    assert_some_interrupted(outcomes, "prune")



def test_pull_after_a_removal_cut_short_restores_the_layer(imgvol, registry, publish, tmp_path):
    """What a SIGKILLed `rm`/`prune` was seen to leave (the kill tests above hit it at random):
    a layer's `.idx` and the files its tar keeps apart are gone, its `.tar` (with holes where
    those files were) and an empty `.files/` remain. The next pull must not index that tar
    as the layer: it reported success and served zeros for the big file."""
    big = pseudo_random(3 * MiB, 71)
    info = publish.image(registry.host, "e2e/crash-torn", "v1",
                         [Layer([Dir("u", mtime=T0), File("u/big.bin", big, mtime=T0)], "gzip")])
    imgvol.pull(info.ref)
    layers = Path(imgvol.root) / "layers"
    hexd = info.diff_ids[0].split(":")[1]
    apart = list((layers / f"{hexd}.files").iterdir())
    assert apart, "the big file was expected to be stored apart"
    (layers / f"{hexd}.idx").unlink()
    for f in apart:
        f.unlink()

    res = imgvol.run("pull", info.ref, "--tls-verify=false", "-q")
    if res.rc == 0:
        out = tmp_path / "out"
        imgvol.unpack(info.ref, out, "--pull", "never")
        got = (out / "u" / "big.bin").read_bytes()
        assert got == big, ("pull succeeded but the big file is wrong"
                            f"{' (all zeros: the tar hole)' if got == bytes(len(big)) else ''}")
        check_clean(imgvol, "pull after a torn removal")
    else:
        assert "imgvol check" in res.stderr or "damaged" in res.stderr, res.describe()


# -- 2. ENOSPC: a small tmpfs as --root ------------------------------------------------------------

TMPFS_SIZE = 24 * MiB


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs, unmounted in teardown (lazily if something still holds it)."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    res = run_cmd(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE // MiB}m,mode=0755", "tmpfs",
                   str(d)], timeout=30)
    assert res.rc == 0, res.describe()
    try:
        yield d
    finally:
        if run_cmd(["umount", str(d)], timeout=30).rc != 0:
            run_cmd(["umount", "-l", str(d)], timeout=30)
        assert not is_mounted(d), f"tmpfs {d} still mounted"


def free_bytes(path) -> int:
    st = os.statvfs(str(path))
    return st.f_bavail * st.f_frsize


def assert_enospc_error(res, ctx) -> str:
    assert res.rc > 0 and not res.timed_out, f"{ctx}: expected a clean failure\n{res.describe()}"
    errors = res.error_lines()
    assert len(errors) == 1, f"{ctx}: expected one 'Error:' line\n{res.describe()}"
    assert "no space" in errors[0].lower(), f"{ctx}: the error does not say 'no space'\n{res.describe()}"
    assert re.search(r"needs at least [0-9.]+ MiB", errors[0]) and re.search(r"[0-9.]+ MiB free", errors[0]), \
        f"{ctx}: the error does not say how much was needed and how much is free\n{res.describe()}"
    return errors[0]


def test_enospc_mid_pull_keeps_the_store_usable(imgvol_bin, base_env, registry, publish, small_fs,
                                                 mounter, tmp_path):
    store = small_fs / "root"
    store.mkdir()
    iv = Imgvol(imgvol_bin, str(store), base_env)
    mounter.imgvol = iv
    big = publish.image(registry.host, "e2e/crash-full", "v1", [
        Layer([Dir("m", mtime=T0), File("m/weights.bin", pseudo_random(20 * MiB, 61), mtime=T0)],
              "gzip"),
        Layer([File("m/extra.bin", pseudo_random(12 * MiB, 62), mtime=T0)], "none")])
    mid_data = pseudo_random(4 * MiB, 63)
    mid = publish.image(registry.host, "e2e/crash-mid", "v1", [
        Layer([Dir("m", mtime=T0), File("m/mid.bin", mid_data, mtime=T0)], "gzip")])
    small = publish.image(registry.host, "e2e/crash-small", "v1", [
        Layer([File("hello.txt", "hello\n", mtime=T0)], "gzip")])

    # An image bigger than the whole filesystem.
    res = iv.run("pull", big.ref, "--tls-verify=false", "-q")
    message = assert_enospc_error(res, "pull of an image bigger than the store")
    print(f"ENOSPC message (image > filesystem): {message!r}")
    check_clean(iv, "after ENOSPC")
    assert iv.images() == []
    iv.ok("prune")
    assert free_bytes(small_fs) > TMPFS_SIZE - 2 * MiB, "prune left the partial download"

    # A small image still fits and is whole.
    pull_ok(iv, small.ref, small.manifest_digest, "small image after ENOSPC")
    check_clean(iv, "small image after ENOSPC")

    # Nearly full (a filler file next to the store): a 4 MiB image fails, then fits.
    filler = small_fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (free_bytes(small_fs) - 2 * MiB))
    res = iv.run("pull", mid.ref, "--tls-verify=false", "-q")
    message = assert_enospc_error(res, "pull into a nearly full store")
    print(f"ENOSPC message (filler): {message!r}")
    check_clean(iv, "after ENOSPC with a filler")
    assert [im["reference"] for im in iv.images()] == [small.ref]
    filler.unlink()
    pull_ok(iv, mid.ref, mid.manifest_digest, "after removing the filler")
    check_clean(iv, "after removing the filler")
    mp = mounter.mount_ok(mid.ref, None, "--pull", "never")
    assert sha256_file(os.path.join(mp, "m/mid.bin")) == hashlib.sha256(mid_data).hexdigest()
    assert mounter.unmount(mp).rc == 0

