"""imgvol mount: real kernel FUSE mounts of images from a real registry.

Read-only checks of the rich image share one mount per module (``menv``); tests that
look at `imgvol mounts`, `rm`/`prune` or failure clean-up get their own store (the
function-scoped ``imgvol``/``mounter`` fixtures).  Every mount is undone in teardown
(`imgvol unmount --force`, then `umount -l`), pass or fail.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import Publisher, make_base_env, umoci_unpack
from support import oci_layout
from support.cli import Imgvol, assert_error
from support.images import T0, pseudo_random, rich_entries, small_layers, whiteout_entries
from support.mounts import (FSTYPE, Mounter, cmdline, drop_cache, errname, errno_of, is_mounted,
                            kill_mount_processes, models_entries, mount_entries, mount_entry, pid_alive,
                            pids_mentioning, read_tree_digests, readdir, sha256_file, subtree,
                            wait_until)
from support.oci_layout import Dir, File, Layer
from support.registry import Registry
from support.tree import (assert_trees_equal, expected_tree, filter_tree, format_tree,
                          hardlink_groups, walk)

DEVICE_TYPES = ("char", "block")


# -- module-wide registry + store ---------------------------------------------------------

@pytest.fixture(scope="module")
def menv(tmp_path_factory, imgvol_bin):
    """One registry, one store and one Mounter for the read-only tests of this module."""
    base = tmp_path_factory.mktemp("mount-module")
    reg = Registry(tmpdir=str(base)).start()
    (base / "layouts").mkdir()
    (base / "root").mkdir()
    iv = Imgvol(imgvol_bin, str(base / "root"), make_base_env(base / "home"))
    m = Mounter(iv, base)
    ns = SimpleNamespace(reg=reg, publish=Publisher(base / "layouts"), imgvol=iv, mounter=m,
                         base=base)
    try:
        yield ns
    finally:
        m.cleanup()
        reg.stop()


@pytest.fixture
def mm(menv, tmp_path):
    """A per-test Mounter on the module's store (its mounts go away after the test)."""
    m = Mounter(menv.imgvol, tmp_path)
    yield m
    m.cleanup()


@pytest.fixture(scope="module")
def rich(menv):
    """The rich image (gzip, zstd, uncompressed layers), mounted once for the module."""
    entries = rich_entries()
    layers = [Layer(e, c) for e, c in zip(entries, ("gzip", "zstd", "none"))]
    info = menv.publish.image(menv.reg.host, "e2e/rich", "v1", layers)
    info.entries = entries
    info.mp = menv.mounter.mount_ok(info.ref)
    return info


@pytest.fixture(scope="module")
def rich_umoci(rich, menv):
    """umoci unpack of the same layer tars (gzip instead of zstd: umoci 0.4.7 lacks zstd)."""
    if not __import__("shutil").which("umoci"):
        pytest.fail("umoci not installed: hack/test installs it (apt-get install umoci)")
    layout = str(menv.base / "umoci-layout")
    layers = [Layer(e, c) for e, c in zip(rich.entries, ("gzip", "gzip", "none"))]
    info = oci_layout.write_image(layout, "v1", layers)
    assert info.diff_ids == rich.diff_ids
    return umoci_unpack(layout, "v1", str(menv.base / "umoci-bundle"))


@pytest.fixture(scope="module")
def models(menv):
    entries = models_entries()
    info = menv.publish.image(menv.reg.host, "e2e/models", "v1",
                              [Layer(e, "gzip") for e in entries])
    info.entries = entries
    return info


# -- 1. the merged tree -------------------------------------------------------------------

def test_tree_matches_umoci(rich, rich_umoci):
    """Paths, types, modes (setuid/setgid/sticky), owners, sizes, mtimes, symlink targets,
    contents, xattrs and device numbers all equal umoci's unpack of the same image."""
    ours = walk(rich.mp)
    theirs = walk(rich_umoci)
    assert_trees_equal(ours, theirs, "mount", "umoci")
    # spot checks so a bug in walk() itself cannot hide everything
    assert ours["usr/bin/tool"].mode == 0o4755
    assert ours["usr/bin/sgid"].mode == 0o2755 and ours["usr/bin/sgid"].gid == 42
    assert ours["opt/setuid-root"].mode == 0o6755
    assert ours["tmp"].mode == 0o1777 and ours["opt/sticky"].mode == 0o1755
    assert ours["srv/highids"].uid == 100000 and ours["srv/highids"].gid == 200000
    assert dict(ours["srv/xattr"].xattrs) == {"trusted.note": b"t", "user.comment": b"hello",
                                             "user.other": b"42"}
    assert ours["usr/bin/abs"].target == "/etc/hostname"
    assert ours["srv/big.bin"].size == 300 * 1024


def test_tree_matches_model_and_imgvol_unpack(rich, menv, tmp_path):
    ours = walk(rich.mp)
    assert_trees_equal(expected_tree(rich.entries), ours, "model", "mount")
    out = tmp_path / "unpacked"
    menv.imgvol.unpack(rich.ref, out, "--pull", "never")
    assert_trees_equal(filter_tree(ours, exclude_types=DEVICE_TYPES), walk(str(out)),
                       "mount", "imgvol unpack")


def test_xattrs_through_syscalls(rich):
    p = os.path.join(rich.mp, "srv/xattr")
    assert sorted(os.listxattr(p)) == ["trusted.note", "user.comment", "user.other"]
    assert os.getxattr(p, "user.comment") == b"hello"
    assert os.getxattr(p, "user.other") == b"42"
    assert os.getxattr(p, "trusted.note") == b"t"
    e = errno_of(os.getxattr, p, "user.missing")
    assert e == errno.ENODATA, errname(e)
    assert os.listxattr(os.path.join(rich.mp, "etc/motd")) == []


def test_hardlinks_share_inode_and_nlink(rich, rich_umoci):
    groups = hardlink_groups(rich.mp)
    assert groups == [{"etc/passwd", "etc/passwd-link"}, {"usr/bin/tool", "usr/bin/tool-link"}]
    assert groups == hardlink_groups(rich_umoci)
    for g in groups:
        inos = {os.lstat(os.path.join(rich.mp, p)).st_ino for p in g}
        assert len(inos) == 1, (g, inos)
    # st_nlink of every non-directory equals umoci's
    bad = []
    for dirpath, dirnames, filenames in os.walk(rich.mp):
        for n in filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), rich.mp)
            a = os.lstat(os.path.join(rich.mp, rel)).st_nlink
            b = os.lstat(os.path.join(rich_umoci, rel)).st_nlink
            if a != b:
                bad.append(f"{rel}: mount nlink={a} umoci nlink={b}")
        for n in dirnames:   # directories: 1 (unknown) or the classic 2 + subdirectories
            full = os.path.join(dirpath, n)
            subdirs = sum(1 for e in os.scandir(full) if e.is_dir(follow_symlinks=False))
            nl = os.lstat(full).st_nlink
            if nl not in (1, 2 + subdirs):
                bad.append(f"{os.path.relpath(full, rich.mp)}/: nlink={nl}, "
                           f"{subdirs} subdirectories")
    assert not bad, "\n".join(bad)


def test_inode_numbers_unique(rich):
    """Distinct files have distinct st_ino (only hardlinks share one)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(rich.mp):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            seen.setdefault(os.lstat(full).st_ino, set()).add(os.path.relpath(full, rich.mp))
    seen.setdefault(os.lstat(rich.mp).st_ino, set()).add(".")
    shared = sorted(sorted(v) for v in seen.values() if len(v) > 1)
    assert shared == [["etc/passwd", "etc/passwd-link"], ["usr/bin/tool", "usr/bin/tool-link"]]


def test_readdir_has_dot_entries_and_consistent_types(rich):
    problems = []
    dirs = [rich.mp] + [os.path.join(dp, d) for dp, dns, _ in os.walk(rich.mp) for d in dns]
    for d in dirs:
        entries = readdir(d)
        names = [e[0] for e in entries]
        rel = os.path.relpath(d, rich.mp)
        if names.count(".") != 1 or names.count("..") != 1:
            problems.append(f"{rel}: readdir gave {names}")
        others = sorted(n for n in names if n not in (".", ".."))
        if others != sorted(os.listdir(d)) or len(others) != len(set(others)):
            problems.append(f"{rel}: readdir {others} vs listdir {sorted(os.listdir(d))}")
        for name, ino, typ in entries:
            if name in (".", ".."):
                continue
            st = os.lstat(os.path.join(d, name))
            want = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                    stat.S_IFIFO: "fifo", stat.S_IFCHR: "char",
                    stat.S_IFBLK: "block"}[stat.S_IFMT(st.st_mode)]
            if typ not in (want, "unknown"):
                problems.append(f"{rel}/{name}: d_type {typ}, lstat says {want}")
            if ino != st.st_ino:
                problems.append(f"{rel}/{name}: d_ino {ino} != st_ino {st.st_ino}")
        if os.stat(os.path.join(d, ".")).st_ino != os.stat(d).st_ino:
            problems.append(f"{rel}/. has another inode than {rel}")
    assert not problems, "\n".join(problems)
    ls = subprocess.run(["ls", "-1a", rich.mp], capture_output=True, text=True, check=True)
    assert ls.stdout.splitlines()[:2] == [".", ".."], ls.stdout
    assert os.stat(os.path.join(rich.mp, "usr/bin/..")).st_ino == \
        os.stat(os.path.join(rich.mp, "usr")).st_ino


def test_statvfs(rich):
    sv = os.statvfs(rich.mp)
    assert sv.f_bsize > 0, sv
    assert sv.f_namemax >= 255, sv
    assert sv.f_flag & os.ST_RDONLY, f"statvfs flags {sv.f_flag:#x} lack ST_RDONLY"
    assert sv.f_flag & os.ST_NOSUID, f"statvfs flags {sv.f_flag:#x} lack ST_NOSUID"
    assert sv.f_flag & os.ST_NODEV, f"statvfs flags {sv.f_flag:#x} lack ST_NODEV"
    os.statvfs(os.path.join(rich.mp, "usr/bin"))   # also below the root
    os.statvfs(os.path.join(rich.mp, "srv/big.bin"))


def test_device_nodes(rich):
    st = os.lstat(os.path.join(rich.mp, "dev/null"))
    assert stat.S_ISCHR(st.st_mode), oct(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(os.path.join(rich.mp, "dev/loop9"))
    assert stat.S_ISBLK(st.st_mode), oct(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 9) and st.st_gid == 6
    st = os.lstat(os.path.join(rich.mp, "run/fifo"))
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    # nodev: a device node on the mount cannot be opened
    e = errno_of(os.open, os.path.join(rich.mp, "dev/null"), os.O_RDONLY)
    assert e == errno.EACCES, f"opening a device on a nodev mount: {errname(e)}"


def test_file_contents_and_symlinks(rich):
    mp = Path(rich.mp)
    assert (mp / "etc/passwd").read_text().endswith("alice:x:1000:1000::/home/alice:/bin/sh\n")
    assert (mp / "etc/passwd-link").read_bytes() == (mp / "etc/passwd").read_bytes()
    assert (mp / "srv/big.bin").read_bytes() == pseudo_random(300 * 1024, 3)
    assert (mp / "srv/empty").read_bytes() == b""
    assert (mp / "srv/na\u00efve file.txt").read_text() == "unicode + space\n"
    assert os.readlink(mp / "bin") == "usr/bin"
    assert (mp / "bin" / "tool").read_text() == "#!/bin/sh\necho tool\n"   # relative link
    assert sorted(os.listdir(mp / "bin")) == ["abs", "sgid", "tool", "tool-link"]
    e = errno_of(os.stat, mp / "dangling")
    assert e == errno.ENOENT, errname(e)
    long_dir = mp / "deep" / "/".join(["d" * 40] * 3)
    assert (long_dir / ("long-name-" + "x" * 120)).read_text() == "long\n"
    e = errno_of(os.stat, mp / "no-such-file")
    assert e == errno.ENOENT, errname(e)
    e = errno_of(os.listdir, mp / "etc/passwd")
    assert e == errno.ENOTDIR, errname(e)


def test_permissions_enforced_for_other_users(rich):
    """default_permissions: the kernel checks modes, so uid 65534 cannot read alice's notes.
    (The test's tmp dirs are 0700, so the child chdirs into the mount before dropping root.)"""
    code = ("import os,sys\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "def t(p):\n"
            "    try:\n        open(p,'rb').read(); return 'ok'\n"
            "    except OSError as e:\n        return str(e.errno)\n"
            "print(t('etc/passwd'), t('home/alice/notes'), t('srv/highids'))\n")
    res = subprocess.run(["python3", "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=rich.mp)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok", str(errno.EACCES), "ok"], res.stdout


# -- 2. read-only -------------------------------------------------------------------------

def _readonly_ops(mp):
    f = os.path.join(mp, "etc/passwd")
    j = lambda *p: os.path.join(mp, *p)                                   # noqa: E731
    return {
        "open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(f, os.O_RDWR),
        "open O_APPEND": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
        "open O_TRUNC": lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
        "create": lambda: os.open(j("etc/new-file"), os.O_WRONLY | os.O_CREAT, 0o644),
        "create in root": lambda: os.open(j("new-file"), os.O_RDWR | os.O_CREAT | os.O_EXCL),
        "mkdir": lambda: os.mkdir(j("new-dir")),
        "rmdir": lambda: os.rmdir(j("opt/sticky")),
        "unlink": lambda: os.unlink(f),
        "unlink symlink": lambda: os.unlink(j("bin")),
        "rename": lambda: os.rename(f, j("etc/renamed")),
        "rename dir": lambda: os.rename(j("usr"), j("usr2")),
        "chmod": lambda: os.chmod(f, 0o600),
        "chmod root": lambda: os.chmod(mp, 0o700),
        "chown": lambda: os.chown(f, 1, 1),
        "lchown symlink": lambda: os.lchown(j("bin"), 1, 1),
        "utime": lambda: os.utime(f, (1, 1)),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(j("srv/xattr"), "user.comment"),
        "truncate": lambda: os.truncate(f, 0),
        "symlink": lambda: os.symlink("etc/passwd", j("new-link")),
        "link": lambda: os.link(f, j("etc/hard")),
        "mkfifo": lambda: os.mkfifo(j("new-fifo")),
        "mknod": lambda: os.mknod(j("new-dev"), 0o600 | stat.S_IFCHR, os.makedev(1, 3)),
    }


OPS = sorted(_readonly_ops("/x"))


@pytest.mark.parametrize("op", OPS)
def test_readonly(rich, op):
    before = walk(rich.mp, mtimes=True)
    fn = _readonly_ops(rich.mp)[op]
    try:
        r = fn()
        if isinstance(r, int):
            os.close(r)
        got = None
    except OSError as e:
        got = e.errno
    assert got == errno.EROFS, f"{op}: expected EROFS, got {errname(got)}"
    assert walk(rich.mp, mtimes=True) == before, f"{op} changed the tree"


# -- 3. inode numbers ---------------------------------------------------------------------

def _inodes(mp):
    out = {".": os.lstat(mp).st_ino}
    for dirpath, dirnames, filenames in os.walk(mp):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            out[os.path.relpath(full, mp)] = os.lstat(full).st_ino
    return out


def test_inode_numbers_same_on_two_mounts(rich, mm):
    a = _inodes(rich.mp)
    mp2 = mm.mount_ok(rich.ref, None, "--pull", "never")
    assert _inodes(mp2) == a, "two live mounts of one image disagree on st_ino"
    assert mm.unmount(mp2).rc == 0
    mp3 = mm.mount_ok(rich.ref, None, "--pull", "never")
    b = _inodes(mp3)
    diff = sorted(p for p in a if a[p] != b.get(p))
    assert not diff, f"st_ino changed after a remount for: {diff[:20]}"


# -- 4. large files -----------------------------------------------------------------------

RAW_SIZE = 128 << 20
GZ_SIZE = 64 << 20


@pytest.fixture(scope="module")
def big(menv):
    raw = pseudo_random(RAW_SIZE, 101)
    gz = pseudo_random(GZ_SIZE, 202)
    layers = [Layer([Dir("big", mtime=T0), File("big/raw.bin", raw, mtime=T0)], "none"),
              Layer([File("big/gz.bin", gz, mtime=T0)], "gzip")]
    info = menv.publish.image(menv.reg.host, "e2e/big", "v1", layers)
    mp = menv.mounter.mount_ok(info.ref, None, timeout=600)
    files = {"big/raw.bin": raw, "big/gz.bin": gz}
    return SimpleNamespace(info=info, mp=mp, files=files,
                           sha={k: hashlib.sha256(v).hexdigest() for k, v in files.items()})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["big/raw.bin", "big/gz.bin"])
def test_big_file_sha256(big, name):
    path = os.path.join(big.mp, name)
    assert os.stat(path).st_size == len(big.files[name])
    drop_cache(path)
    assert sha256_file(path, chunk=(1 << 20) + 13) == big.sha[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["big/raw.bin", "big/gz.bin"])
def test_big_file_random_preads(big, name):
    path = os.path.join(big.mp, name)
    data = big.files[name]
    size = len(data)
    rnd = random.Random(len(name) * 7919 + len(big.files[name]))
    drop_cache(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        cases = [(0, 1), (size - 1, 1), (size - 5, 100), (size, 10), (size + 12345, 10),
                 ((1 << 20) - 3, 7), ((128 << 10) - 1, (128 << 10) + 2)]
        cases += [(rnd.randrange(0, size), rnd.choice([1, 511, 4096, 65536, 200_000, 1 << 20,
                                                     3 << 20]))
                  for _ in range(200 - len(cases))]
        bad = []
        for off, n in cases:
            got = os.pread(fd, n, off)
            if got != data[off:off + n]:
                bad.append(f"pread({n}, {off}): got {len(got)} bytes, "
                           f"want {len(data[off:off + n])}, first diff at "
                           f"{next((i for i, (x, y) in enumerate(zip(got, data[off:])) if x != y), None)}")
        assert not bad, f"{len(bad)} of {len(cases)} preads wrong:\n" + "\n".join(bad[:20])
    finally:
        os.close(fd)


@pytest.mark.slow
def test_big_files_concurrent_readers(big):
    """8 sha256sum processes per file at once (16 in all), then 8 threads doing preads."""
    for name in big.files:
        drop_cache(os.path.join(big.mp, name))
    procs = []
    for name in big.files:
        for _ in range(8):
            procs.append((name, subprocess.Popen(["sha256sum", os.path.join(big.mp, name)],
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 text=True)))
    bad = []
    for name, p in procs:
        out, err = p.communicate(timeout=600)
        digest = out.split()[0] if out.split() else ""
        if p.returncode != 0 or digest != big.sha[name]:
            bad.append(f"{name}: rc={p.returncode} {digest[:16]} {err.strip()}")
    assert not bad, "\n".join(bad)

    name = "big/gz.bin"
    data = big.files[name]
    drop_cache(os.path.join(big.mp, name))
    fd = os.open(os.path.join(big.mp, name), os.O_RDONLY)
    errors = []

    def reader(seed):
        r = random.Random(seed)
        try:
            for _ in range(60):
                off = r.randrange(0, len(data))
                n = r.choice([4096, 131072, 1 << 20])
                if os.pread(fd, n, off) != data[off:off + n]:
                    errors.append(f"thread {seed}: wrong bytes at {off}+{n}")
        except OSError as e:
            errors.append(f"thread {seed}: {e}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        os.close(fd)
    assert not errors, "\n".join(errors[:20])


# -- 5. whiteouts ---------------------------------------------------------------------------

def test_whiteouts_and_opaque_dirs(menv, mm):
    entries = whiteout_entries()
    info = menv.publish.image(menv.reg.host, "e2e/whiteouts", "v1",
                              [Layer(e, "gzip") for e in entries])
    mp = mm.mount_ok(info.ref)
    got = walk(mp)
    assert_trees_equal(expected_tree(entries), got, "model", "mount")
    assert sorted(got) == ["a", "a/2", "a/sub", "b", "b/keep", "c", "c/upper"], format_tree(got)
    for gone in ("top", "a/1", "b/gone", "c/lower", "a/sub/x", ".wh.top", "b/.wh.gone",
                 "c/.wh..wh..opq", "a/.wh.1"):
        e = errno_of(os.lstat, os.path.join(mp, gone))
        assert e in (errno.ENOENT, errno.ENOTDIR), f"{gone}: {errname(e)}"
    assert Path(mp, "a/sub").read_text() == "now a file"
    assert stat.S_IMODE(os.stat(os.path.join(mp, "c")).st_mode) == 0o700
    for d in ("", "a", "b", "c"):
        names = [n for n, *_ in readdir(os.path.join(mp, d))]
        assert not any(".wh." in n for n in names), (d, names)


def test_whiteouts_in_rich_image(rich):
    mp = Path(rich.mp)
    assert not (mp / "etc/hostname").exists()
    assert not (mp / "var/tmp").exists() and os.listdir(mp / "var") == []
    assert sorted(os.listdir(mp / "usr/lib")) == ["new.so"]        # opaque
    assert sorted(os.listdir(mp / "opaque-me")) == ["upper"]       # opaque
    assert (mp / "replace-dir-with-file").is_file()
    assert (mp / "replace-file-with-dir").is_dir()
    assert sorted(os.listdir(mp / "replace-file-with-dir")) == ["inside"]


# -- 6. --subpath ---------------------------------------------------------------------------

@pytest.mark.parametrize("sub", ["models", "models/weights", "models/", "./models"])
def test_subpath(models, mm, sub):
    mp = mm.mount_ok(models.ref, None, "--subpath", sub)
    full = expected_tree(models.entries)
    sub = os.path.normpath(sub)                          # the key in the model
    want = subtree(full, sub)
    got = walk(mp)
    assert_trees_equal(want, got, f"model of {sub}/", "mount")
    root = os.stat(mp)
    assert stat.S_ISDIR(root.st_mode)
    assert (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid) == \
        (full[sub].mode, full[sub].uid, full[sub].gid), "mount root should be the subdir"
    names = {n for n, *_ in readdir(mp)}
    assert names == {".", ".."} | {p for p in want if "/" not in p}
    assert not os.path.exists(os.path.join(mp, "etc"))
    assert not os.path.exists(os.path.join(mp, "README"))
    e = mount_entry(mp)
    assert e.source == f"imgvol:{models.ref}", e


def test_subpath_symlink_inside_subtree(models, mm):
    mp = mm.mount_ok(models.ref, None, "--subpath", "models")
    assert os.readlink(os.path.join(mp, "latest")) == "weights/part-1.bin"
    assert Path(mp, "latest").read_bytes() == pseudo_random(100 * 1024 + 7, 12)


# -- 7. lifecycle ---------------------------------------------------------------------------

@pytest.fixture
def small(registry, publish):
    return publish.image(registry.host, "e2e/small", "v1", small_layers("alpha"))


def test_mount_record_and_proc_mounts(mounter, small):
    mp = mounter.mount_ok(small.ref)
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    listed = mounter.mounts()
    assert len(listed) == 1, listed
    m = listed[0]
    assert set(m) >= {"mountpoint", "reference", "digest", "pid"}, m
    assert m["mountpoint"] == mp and m["reference"] == small.ref, m
    assert m["digest"] == small.manifest_digest, m
    assert isinstance(m["pid"], int) and pid_alive(m["pid"]), m
    assert "imgvol" in os.path.basename(open(f"/proc/{m['pid']}/cmdline", "rb")
                                        .read().split(b"\0")[0].decode()), m
    assert os.getsid(m["pid"]) != os.getsid(0), "the server should run in its own session"
    es = mount_entries(mp)
    assert len(es) == 1, es
    e = es[0]
    assert e.fstype == FSTYPE and e.source == f"imgvol:{small.ref}", e
    for opt in ("ro", "nosuid", "nodev", "default_permissions", "allow_other"):
        assert e.has(opt), f"{opt} missing from {e.options}"
    assert not e.has("rw"), e


def test_unmount_stops_server(mounter, small):
    mp = mounter.mount_ok(small.ref)
    pid = mounter.listed(mp)["pid"]
    res = mounter.unmount(mp)
    assert res.rc == 0, res.describe()
    assert not is_mounted(mp)
    assert mounter.mounts() == []
    wait_until(lambda: not pid_alive(pid), 15, what=f"server {pid} to exit after unmount")
    assert os.listdir(mp) == [], "the mountpoint should be an empty directory again"
    # and it can be mounted again
    mounter.mount_ok(small.ref, mp, "--pull", "never")
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"


def test_kill9_server_and_keeper_then_unmount(mounter, small):
    """Everything holding the mount's descriptor dies (its keeper and its server): the mount
    is dead, and `unmount` still takes it away."""
    mp = mounter.mount_ok(small.ref)
    kill_mount_processes(mounter.listed(mp))
    # A request in flight at the moment the server dies gets ECONNABORTED from the kernel
    # (the dying server's threads may still hold /dev/fuse briefly); after that: ENOTCONN.
    # (A fresh name each time: the kernel may answer stat(mp) from its attribute cache.)
    probe = iter(range(10 ** 9))
    wait_until(lambda: errno_of(os.stat, os.path.join(mp, f"probe-{next(probe)}"))
               == errno.ENOTCONN, 15, what="the dead mount to answer ENOTCONN")
    for fn, arg in ((os.stat, os.path.join(mp, "alpha.txt")), (os.listdir, mp),
                    (lambda p: open(p, "rb").read(), os.path.join(mp, "etc/os-release"))):
        e = errno_of(fn, arg)
        assert e == errno.ENOTCONN, f"{getattr(fn, '__name__', fn)}: {errname(e)}"
    res = mounter.unmount(mp)
    assert res.rc == 0, res.describe()
    assert not is_mounted(mp), mount_entries(mp)
    assert all(m.get("mountpoint") != mp for m in mounter.mounts())
    assert os.path.isdir(mp) and os.listdir(mp) == []


def test_kill9_server_and_keeper_then_force_unmount(mounter, small):
    mp = mounter.mount_ok(small.ref)
    kill_mount_processes(mounter.listed(mp))
    res = mounter.unmount(mp, "--force")
    assert res.rc == 0, res.describe()
    assert not is_mounted(mp)
    assert mounter.mounts() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground(mounter, small, sig):
    p, mp = mounter.foreground(small.ref)
    try:
        wait_until(lambda: (mount_entry(mp) or p.poll() is not None), 60,
                   what="the --foreground mount to appear")
        assert p.poll() is None, f"--foreground exited early: rc={p.returncode}\n" + \
            open(p.err_path).read()
        assert mount_entry(mp).fstype == FSTYPE
        assert Path(mp, "alpha.txt").read_text() == "alpha\n"
        m = mounter.listed(mp)
        assert m is not None and pid_alive(m["pid"]), mounter.mounts()
        # Do not touch the mount from here on: a FUSE request could wake a server that
        # otherwise missed the signal.
        t0 = time.monotonic()
        p.send_signal(sig)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert rc is not None, (f"`imgvol mount --foreground` still running 30s after {sig.name}\n"
                            + open(p.err_path).read())
    assert time.monotonic() - t0 < 10, f"exit took {time.monotonic() - t0:.1f}s"
    assert rc == 0, f"exit code {rc} after {sig.name}\n" + open(p.err_path).read()
    assert not is_mounted(mp), mount_entries(mp)
    assert all(x.get("mountpoint") != mp for x in mounter.mounts())
    assert pids_mentioning(mp) == []


def test_unmount_busy_needs_force(mounter, small):
    mp = mounter.mount_ok(small.ref)
    f = open(os.path.join(mp, "alpha.txt"), "rb")
    try:
        res = mounter.unmount(mp)
        assert_error(res)
        assert is_mounted(mp), "a refused unmount must leave the mount in place"
        assert Path(mp, "etc/os-release").read_text().startswith("ID=imgvol-e2e")
        res = mounter.unmount(mp, "--force")
        assert res.rc == 0, res.describe()
        assert not is_mounted(mp), mount_entries(mp)
        assert all(x.get("mountpoint") != mp for x in mounter.mounts())
    finally:
        f.close()


def test_mount_pull_policies(mounter, registry, small):
    # never, not cached
    mp = mounter.mountpoint()
    res = mounter.mount(small.ref, mp, "--pull", "never")
    assert_error(res)
    assert not is_mounted(mp)
    # missing: pulls and mounts
    mounter.mount_ok(small.ref, mp)
    assert mounter.unmount(mp).rc == 0
    # never, cached: works with the registry gone
    registry.stop()
    mounter.mount_ok(small.ref, mp, "--pull", "never")
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    assert mounter.listed(mp)["digest"] == small.manifest_digest


def test_mount_by_digest(mounter, registry, small):
    ref = f"{registry.host}/e2e/small@{small.manifest_digest}"
    mp = mounter.mount_ok(ref)
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    m = mounter.listed(mp)
    assert m["digest"] == small.manifest_digest
    assert mount_entry(mp).source == f"imgvol:{ref}"


# -- 8. sharing, rm and prune ------------------------------------------------------------------

def _tree_digests_of(layers):
    return {p: n.sha256 for p, n in expected_tree([l.entries for l in layers]).items()
            if n.type == "file"}


def test_several_mounts_at_once(mounter, registry, publish):
    la = small_layers("alpha")
    lb = small_layers("beta")
    a = publish.image(registry.host, "e2e/a", "v1", la)
    b = publish.image(registry.host, "e2e/b", "v1", lb)
    a1 = mounter.mount_ok(a.ref)
    a2 = mounter.mount_ok(a.ref)
    b1 = mounter.mount_ok(b.ref)
    for mp, layers in ((a1, la), (a2, la), (b1, lb)):
        assert read_tree_digests(mp) == _tree_digests_of(layers), mp
    listed = {m["mountpoint"]: m for m in mounter.mounts()}
    assert set(listed) == {a1, a2, b1}, listed
    assert listed[a1]["digest"] == listed[a2]["digest"] == a.manifest_digest
    assert listed[b1]["digest"] == b.manifest_digest
    assert len({listed[x]["pid"] for x in listed}) == 3, "one server per mount expected"
    assert mounter.unmount(a1).rc == 0
    assert Path(a2, "alpha.txt").read_text() == "alpha\n", "unmounting a1 broke a2"
    assert Path(b1, "beta.txt").read_text() == "beta\n"


def test_rm_refuses_while_mounted(mounter, imgvol, small):
    mp = mounter.mount_ok(small.ref)
    res = imgvol.run("rm", small.ref)
    assert_error(res, mp)
    assert imgvol.image(small.ref) is not None, "a refused rm must keep the image"
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    assert mounter.unmount(mp).rc == 0
    imgvol.ok("rm", small.ref)
    assert imgvol.image(small.ref) is None


def test_rm_force_and_prune_keep_live_mount(mounter, imgvol, registry, publish):
    entries = [[Dir("data", mtime=T0), File("data/first.bin", pseudo_random(3 << 20, 41),
                                             mtime=T0)],
               [File("data/second.bin", pseudo_random(5 << 20, 42), mtime=T0),
                File("data/small.txt", "small\n", mtime=T0)]]
    layers = [Layer(entries[0], "gzip"), Layer(entries[1], "none")]
    info = publish.image(registry.host, "e2e/prune", "v1", layers)
    want = {p: n.sha256 for p, n in expected_tree(entries).items() if n.type == "file"}
    mp = mounter.mount_ok(info.ref)
    assert os.listdir(mp) == ["data"]          # nothing read yet
    res = imgvol.run("rm", "--force", info.ref)
    assert res.rc == 0, res.describe()
    assert imgvol.image(info.ref) is None
    imgvol.prune_json()
    registry.stop()                            # nothing may be re-fetched either
    got = read_tree_digests(mp)
    assert got == want, "the live mount lost data after rm --force + prune"
    for p in want:
        drop_cache(os.path.join(mp, p))
    assert read_tree_digests(mp) == want
    assert mounter.listed(mp) is not None
    assert mounter.unmount(mp).rc == 0
    freed = imgvol.prune_json()
    assert freed >= sum(l.size for l in layers), f"prune after unmount freed only {freed}"
    assert imgvol.prune_json() == 0


def test_prune_keeps_image_of_live_mount_with_shared_layer(mounter, imgvol, registry,
                                                            publish):
    """Two images share a layer; one is mounted, the other removed: the mount still reads."""
    from support.images import base_layer
    shared = base_layer(size=512 * 1024)
    a = publish.image(registry.host, "e2e/sa", "v1",
                      [shared, Layer([File("a.txt", "a\n", mtime=T0)], "gzip")])
    b = publish.image(registry.host, "e2e/sb", "v1",
                      [shared, Layer([File("b.txt", "b\n", mtime=T0)], "gzip")])
    imgvol.pull(b.ref)
    mp = mounter.mount_ok(a.ref)
    imgvol.ok("rm", b.ref)
    imgvol.ok("rm", "--force", a.ref)
    imgvol.prune_json()
    assert Path(mp, "shared/blob.bin").read_bytes() == pseudo_random(512 * 1024, 1)
    assert Path(mp, "a.txt").read_text() == "a\n"


# -- 9. bad input -------------------------------------------------------------------------------

def _assert_nothing_mounted(mounter, mp):
    assert not is_mounted(mp), f"{mp} is mounted after a failed mount: {mount_entries(mp)}"
    assert all(m.get("mountpoint") != str(mp) for m in mounter.mounts())
    # no server left behind for this mountpoint
    wait_until(lambda: pids_mentioning(str(mp)) == [], 10,
               what=f"no process serving {mp} after a failed mount")


def test_bad_mountpoint_missing(mounter, small, tmp_path):
    mp = tmp_path / "does-not-exist"
    res = mounter.mount(small.ref, mp)
    assert_error(res, str(mp))
    assert not mp.exists() or not is_mounted(mp)
    _assert_nothing_mounted(mounter, mp)


def test_bad_mountpoint_is_a_file(mounter, small, tmp_path):
    mp = tmp_path / "a-file"
    mp.write_text("x")
    res = mounter.mount(small.ref, mp)
    assert_error(res, str(mp))
    assert mp.read_text() == "x"
    _assert_nothing_mounted(mounter, mp)


def test_bad_mountpoint_already_mounted(mounter, registry, publish, small):
    other = publish.image(registry.host, "e2e/other", "v1", small_layers("beta"))
    mp = mounter.mount_ok(small.ref)
    pid = mounter.listed(mp)["pid"]
    res = mounter.mount(other.ref, mp)
    assert_error(res, mp)
    assert len(mount_entries(mp)) == 1, f"a second mount was stacked: {mount_entries(mp)}"
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    assert not Path(mp, "beta.txt").exists()
    assert [m["mountpoint"] for m in mounter.mounts()] == [mp]
    assert pid_alive(pid)
    # the same image again on the same mountpoint is refused too
    res = mounter.mount(small.ref, mp)
    assert_error(res, mp)
    assert len(mount_entries(mp)) == 1


@pytest.mark.parametrize("what", ["unknown-tag", "unknown-repo", "unreachable-registry"])
def test_bad_image_not_pullable(mounter, registry, small, what):
    ref = {"unknown-tag": f"{registry.host}/e2e/small:nope",
           "unknown-repo": f"{registry.host}/e2e/nothing:v1",
           "unreachable-registry": "127.0.0.1:9/e2e/small:v1"}[what]
    mp = mounter.mountpoint()
    res = mounter.mount(ref, mp, timeout=120)
    assert_error(res)
    _assert_nothing_mounted(mounter, mp)
    assert os.listdir(mp) == []


def test_bad_pull_never_not_cached(mounter, small):
    mp = mounter.mountpoint()
    res = mounter.mount(small.ref, mp, "--pull", "never")
    assert_error(res)
    _assert_nothing_mounted(mounter, mp)


@pytest.fixture
def models_fn(registry, publish):
    entries = models_entries()
    info = publish.image(registry.host, "e2e/models", "v1", [Layer(e, "gzip") for e in entries])
    info.entries = entries
    return info


@pytest.mark.parametrize("sub", ["nope", "models/nope", "etc/hostname", "models/latest",
                                 "models/old.txt", "../..", "models/../..",
                                 "models/../../etc"])
def test_bad_subpath(mounter, imgvol, models_fn, sub):
    imgvol.pull(models_fn.ref)
    mp = mounter.mountpoint()
    res = mounter.mount(models_fn.ref, mp, "--subpath", sub)
    assert_error(res, sub)
    _assert_nothing_mounted(mounter, mp)


def test_unmount_not_a_mount(mounter, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    res = mounter.unmount(d)
    assert_error(res, str(d))
    res = mounter.unmount(tmp_path / "missing")
    assert_error(res)


def test_unmount_refuses_foreign_mount(mounter, tmp_path):
    """`imgvol unmount` is for imgvol mounts: a tmpfs on the path stays mounted."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "e2e-tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount tmpfs (the test needs root): {r.stderr}")
    try:
        res = mounter.unmount(d)
        assert_error(res, str(d))
        e = mount_entry(d)
        assert e is not None and e.fstype == "tmpfs", "imgvol unmount removed a tmpfs"
    finally:
        if is_mounted(d) and mount_entry(d).fstype == "tmpfs":
            subprocess.run(["umount", "-l", str(d)])


# -- more of the tree: big directories, mmap, st_blocks -------------------------------------

MANY = 3000


@pytest.fixture(scope="module")
def wide(menv):
    """A directory with 3000 entries of 60-120 character names spread over two layers,
    some deleted again by whiteouts in the upper layer."""
    from support.oci_layout import Whiteout
    names = [f"{i:05d}-" + "n" * (54 + i % 60) for i in range(MANY)]
    l1 = [Dir("many", mtime=T0)] + [File(f"many/{n}", n[:5], mtime=T0) for n in names[:2000]]
    l2 = [File(f"many/{n}", n[:5], mtime=T0) for n in names[2000:]] + \
         [Whiteout(f"many/{n}") for n in names[:2000:10]]
    info = menv.publish.image(menv.reg.host, "e2e/wide", "v1",
                              [Layer(l1, "gzip"), Layer(l2, "zstd")])
    info.names = set(names) - set(names[:2000:10])
    info.mp = menv.mounter.mount_ok(info.ref)
    return info


def test_big_directory_readdir(wide):
    from support.mounts import getdents_names
    d = os.path.join(wide.mp, "many")
    got = os.listdir(d)
    assert len(got) == len(set(got)), "duplicate names in readdir"
    assert set(got) == wide.names, (len(got), len(wide.names))
    for bufsize in (280, 1024, 4096):       # many READDIR requests resuming at offsets
        names = getdents_names(d, bufsize)
        assert sorted(n for n in names if n not in (".", "..")) == sorted(wide.names), bufsize
        assert names.count(".") == 1 and names.count("..") == 1, bufsize
    one = sorted(wide.names)[1234]
    assert Path(d, one).read_text() == one[:5]


def test_big_directory_concurrent_readdir(wide):
    d = os.path.join(wide.mp, "many")
    results, errors = [], []

    def lister():
        try:
            for _ in range(5):
                results.append(frozenset(os.listdir(d)))
        except OSError as e:
            errors.append(e)

    ts = [threading.Thread(target=lister) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    assert len(results) == 30 and all(r == wide.names for r in results)


def test_mmap_reads(rich):
    import mmap
    path = os.path.join(rich.mp, "srv/big.bin")
    want = pseudo_random(300 * 1024, 3)
    drop_cache(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert len(m) == len(want)
        rnd = random.Random(5)
        for _ in range(100):
            off = rnd.randrange(0, len(want))
            n = rnd.randrange(1, 20000)
            assert m[off:off + n] == want[off:off + n], (off, n)
        assert m[:] == want
    # a writable shared mapping of a read-only mount's file is refused
    with open(path, "rb") as f:
        with pytest.raises((OSError, PermissionError, ValueError)):
            mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)


def test_st_blocks_and_blksize(rich):
    """du/cp/tar trust st_blocks: a non-empty regular file must not look like all holes."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(rich.mp):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_blksize <= 0:
                bad.append(f"{p}: st_blksize={st.st_blksize}")
            if st.st_size > 0 and st.st_blocks * 512 < st.st_size:
                bad.append(f"{os.path.relpath(p, rich.mp)}: size={st.st_size} "
                           f"st_blocks={st.st_blocks}")
    assert not bad, "\n".join(bad)
    du = subprocess.run(["du", "-s", "--block-size=1", os.path.join(rich.mp, "srv")],
                        capture_output=True, text=True, check=True)
    assert int(du.stdout.split()[0]) >= 300 * 1024, du.stdout


def test_cp_and_tar_of_mount(rich, tmp_path):
    """Everyday tools copy the tree faithfully (cp -a; tar of the mount)."""
    dst = tmp_path / "copy"
    r = subprocess.run(["cp", "-a", os.path.join(rich.mp, "srv"), str(dst)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a = walk(os.path.join(rich.mp, "srv"))
    b = walk(str(dst))
    assert_trees_equal(a, b, "mount", "cp -a")


# -- more lifecycle ---------------------------------------------------------------------------

def test_server_outlives_callers_session(mounter, small):
    """The mount command's whole process group is killed after it returns: the server is in
    its own session, so the mount keeps serving."""
    mp = mounter.mountpoint()
    p = subprocess.Popen(mounter.imgvol.argv("mount", small.ref, mp, "--tls-verify=false"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=mounter.imgvol.env,
                         start_new_session=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    for sig in (signal.SIGHUP, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    m = mounter.listed(mp)
    assert m is not None and pid_alive(m["pid"])


def test_mount_returns_without_holding_pipes(mounter, small):
    """`mount` exits and its stdout/stderr reach EOF although the server keeps running
    (the server must not inherit the caller's pipes)."""
    mp = mounter.mountpoint()
    t0 = time.monotonic()
    res = mounter.mount(small.ref, mp, timeout=60)
    assert res.rc == 0 and not res.timed_out, res.describe()
    assert time.monotonic() - t0 < 60
    assert is_mounted(mp)


def test_mountpoint_with_space_and_unicode(mounter, imgvol, small, tmp_path):
    mp = tmp_path / "with space \u00fc\tand tab"
    mp.mkdir()
    mounter._record(mp)
    res = mounter.mount(small.ref, mp)
    assert res.rc == 0, res.describe()
    e = mount_entry(mp)
    assert e is not None and e.fstype == FSTYPE, e
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"
    assert [m["mountpoint"] for m in mounter.mounts()] == [str(mp)]
    assert_error(imgvol.run("rm", small.ref), str(mp))
    res = mounter.unmount(mp)
    assert res.rc == 0, res.describe()
    assert not is_mounted(mp)
    assert mounter.mounts() == []


def test_mountpoint_spellings(mounter, small, tmp_path):
    """Relative path, trailing slash, a symlink to the directory: all mean the same mount."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    mounter._record(real)
    p = subprocess.run(mounter.imgvol.argv("mount", small.ref, "real/", "--tls-verify=false"),
                       cwd=str(tmp_path), env=mounter.imgvol.env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert is_mounted(real)
    assert [m["mountpoint"] for m in mounter.mounts()] == [str(real)], \
        "mounts should list the canonical absolute path"
    # already mounted, spelled through the symlink
    assert_error(mounter.mount(small.ref, link))
    assert len(mount_entries(real)) == 1
    res = mounter.unmount(str(link) + "/")
    assert res.rc == 0, res.describe()
    assert not is_mounted(real)


def test_concurrent_mounts_of_uncached_image(mounter, registry, publish):
    """Three `mount`s of an image nobody pulled yet, at once: all succeed and agree."""
    layers = [Layer([Dir("d", mtime=T0), File("d/blob", pseudo_random(4 << 20, 77), mtime=T0)],
                    "gzip"),
              Layer([File("d/small", "s\n", mtime=T0)], "zstd")]
    info = publish.image(registry.host, "e2e/race", "v1", layers)
    mps = [mounter.mountpoint() for _ in range(3)]
    procs = [subprocess.Popen(mounter.imgvol.argv("mount", info.ref, mp, "--tls-verify=false"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=mounter.imgvol.env, start_new_session=True) for mp in mps]
    outs = [p.communicate(timeout=180) for p in procs]
    mounter._note_servers()
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e
    want = hashlib.sha256(pseudo_random(4 << 20, 77)).hexdigest()
    for mp in mps:
        assert sha256_file(os.path.join(mp, "d/blob")) == want
        assert Path(mp, "d/small").read_text() == "s\n"
    assert sorted(m["mountpoint"] for m in mounter.mounts()) == sorted(mps)
    assert [im["reference"] for im in mounter.imgvol.images()] == [info.ref]


def test_concurrent_mounts_same_mountpoint(mounter, imgvol, small):
    """Two mounts racing for one mountpoint: exactly one wins, nothing is stacked."""
    imgvol.pull(small.ref)
    mp = mounter.mountpoint()
    procs = [subprocess.Popen(mounter.imgvol.argv("mount", small.ref, mp, "--pull", "never"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=mounter.imgvol.env, start_new_session=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    mounter._note_servers()
    rcs = [p.returncode for p in procs]
    assert rcs.count(0) == 1, (rcs, outs)
    for p, (o, e) in zip(procs, outs):
        if p.returncode != 0:
            assert p.returncode > 0 and "Error:" in e, (p.returncode, e)
    assert len(mount_entries(mp)) == 1, mount_entries(mp)
    assert [m["mountpoint"] for m in mounter.mounts()] == [mp]
    time.sleep(1)
    live = [pid for pid in pids_mentioning(mp) if pid_alive(pid)]
    roles = sorted(next((a for a in cmdline(pid) if a in ("__keep", "__serve")), "?") for pid in live)
    assert roles == ["__keep", "__serve"], f"expected one keeper and one server for {mp}, found {live}: {roles}"
    assert Path(mp, "alpha.txt").read_text() == "alpha\n"


# -- pull flags ------------------------------------------------------------------------------

def test_mount_with_credentials(mounter, auth_registry, publish):
    info = publish.image(auth_registry.host, "e2e/private", "v1", small_layers("secret"),
                         creds=auth_registry.creds)
    mp = mounter.mountpoint()
    res = mounter.mount(info.ref, mp)
    assert_error(res)
    assert not is_mounted(mp)
    mounter.mount_ok(info.ref, mp, "--creds", auth_registry.creds)
    assert Path(mp, "secret.txt").read_text() == "secret\n"


def test_mount_platform(mounter, registry, publish):
    from support.oci_layout import Platform
    idx = publish.index(registry.host, "e2e/multi", "v1", [
        Platform("linux", "amd64", layers=small_layers("amd")),
        Platform("linux", "arm64", "v8", layers=small_layers("arm")),
    ])
    mp = mounter.mount_ok(idx.ref, None, "--platform", "linux/arm64/v8")
    assert sorted(os.listdir(mp)) == ["arm.txt", "etc"]
    mp2 = mounter.mount_ok(idx.ref, None, "--platform", "linux/amd64")
    assert sorted(os.listdir(mp2)) == ["amd.txt", "etc"]


# -- offsets past 4 GiB ----------------------------------------------------------------------

class _ZeroReader:
    """A file-like of `size` zero bytes with `patches` {offset: bytes} written over them."""

    def __init__(self, size, patches):
        self.size, self.pos, self.patches = size, 0, sorted(patches.items())

    def read(self, n=-1):
        if n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        buf = bytearray(n)
        for off, data in self.patches:
            lo, hi = max(off, self.pos), min(off + len(data), self.pos + n)
            if lo < hi:
                buf[lo - self.pos:hi - self.pos] = data[lo - off:hi - off]
        self.pos += n
        return bytes(buf)


def _huge_gzip_layer(size, patches, after: bytes):
    """A gzip layer: `huge.bin` (mostly zeros), then `after.txt` (tar offset > size)."""
    import gzip
    import io
    import tarfile

    class HashingWriter(io.RawIOBase):
        def __init__(self, inner):
            self.inner, self.h = inner, hashlib.sha256()

        def writable(self):
            return True

        def write(self, b):
            self.h.update(b)
            self.inner.write(b)
            return len(b)

    blob = io.BytesIO()
    gz = gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0)
    hw = HashingWriter(gz)
    with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT,
                      bufsize=1 << 20) as tf:
        ti = tarfile.TarInfo("huge.bin")
        ti.size, ti.mtime = size, T0
        tf.addfile(ti, _ZeroReader(size, patches))
        ti = tarfile.TarInfo("after.txt")
        ti.size, ti.mtime = len(after), T0
        tf.addfile(ti, io.BytesIO(after))
    gz.close()
    return Layer.from_blob(blob.getvalue(), "gzip", diff_id="sha256:" + hw.h.hexdigest())


@pytest.mark.slow
def test_offsets_beyond_4gib(mounter, registry, publish):
    size = (4 << 30) + (300 << 20) + 12345          # ~4.3 GiB
    patches = {0: b"HEAD", (1 << 32) - 3: b"ACROSS-4GiB", (1 << 32) + 4096: b"PAST",
               size - 4: b"TAIL"}
    after = b"after the huge file\n"
    layer = _huge_gzip_layer(size, patches, after)
    info = publish.image(registry.host, "e2e/huge", "v1", [layer])
    mp = mounter.mount_ok(info.ref, None, timeout=900)
    path = os.path.join(mp, "huge.bin")
    assert os.stat(path).st_size == size
    assert Path(mp, "after.txt").read_bytes() == after, "entry stored past 4 GiB in the layer"
    fd = os.open(path, os.O_RDONLY)
    try:
        for off, data in patches.items():
            got = os.pread(fd, len(data), off)
            assert got == data, (off, got)
        assert os.pread(fd, 16, (1 << 32) - 8) == b"\0" * 5 + b"ACROSS-4GiB"
        assert os.pread(fd, 100, size - 4) == b"TAIL"
        assert os.pread(fd, 10, size) == b""
        assert os.pread(fd, 4096, 3 << 30) == b"\0" * 4096
    finally:
        os.close(fd)


# -- edge cases of names, links, xattrs and times --------------------------------------------

def edge_entries():
    from support.oci_layout import Symlink, Whiteout
    big_xattr = bytes(range(256)) * 12                           # 3072 bytes, NULs included
    l1 = [
        Dir("e", mtime=T0),
        File("e/" + "n" * 255, "max name\n", mtime=T0),
        File("e/" + "\u00fc" * 127, "two-byte chars, 254 bytes\n", mtime=T0),
        File("e/new\nline", "nl\n", mtime=T0),
        File("e/tab\there", "tab\n", mtime=T0),
        File("e/back\\slash", "bs\n", mtime=T0),
        File("e/\u65e5\u672c\u8a9e-\u00df", "cjk\n", mtime=T0),
        Symlink("e/longlink", "x/" * 1500 + "end", mtime=T0),
        File("e/exactly-1MiB", pseudo_random(1 << 20, 5), mtime=T0),
        File("e/1MiB-plus-1", pseudo_random((1 << 20) + 1, 6), mtime=T0),
        File("e/frac-mtime", "f\n", mtime=T0 + 0.25),
        File("e/old-mtime", "o\n", mtime=1),
        File("e/xattrs", "x\n", mtime=T0,
             xattrs={**{f"user.k{i:02d}": f"value-{i}".encode() for i in range(20)},
                     "user.binary": b"\x00\xff\xfe\x01", "user.big": big_xattr}),
        File("e/mode-000", "zero\n", mode=0o000, mtime=T0),
        Dir("e/becomes-empty", mtime=T0),
        File("e/becomes-empty/a", "a", mtime=T0),
        Dir("e/empty", mtime=T0),
    ]
    l2 = [Whiteout("e/becomes-empty/a")]
    return [l1, l2]


@pytest.fixture(scope="module")
def edge(menv):
    entries = edge_entries()
    info = menv.publish.image(menv.reg.host, "e2e/edge", "v1",
                              [Layer(entries[0], "gzip"), Layer(entries[1], "none")])
    info.entries = entries
    info.mp = menv.mounter.mount_ok(info.ref)
    return info


def test_edge_tree_matches_model(edge):
    assert_trees_equal(expected_tree(edge.entries), walk(edge.mp), "model", "mount")


def test_edge_tree_matches_umoci(edge, menv, umoci):
    layout = str(menv.base / "edge-umoci")
    oci_layout.write_image(layout, "v1", [Layer(e, "gzip") for e in edge.entries])
    theirs = umoci_unpack(layout, "v1", str(menv.base / "edge-bundle"))
    assert_trees_equal(walk(edge.mp), walk(theirs), "mount", "umoci")
    for name in ("frac-mtime", "old-mtime", "exactly-1MiB"):
        a = os.lstat(os.path.join(edge.mp, "e", name)).st_mtime_ns
        b = os.lstat(os.path.join(theirs, "e", name)).st_mtime_ns
        assert a == b, f"e/{name}: mtime_ns mount={a} umoci={b}"


def test_edge_details(edge):
    e = os.path.join(edge.mp, "e")
    assert os.readlink(os.path.join(e, "longlink")) == "x/" * 1500 + "end"
    assert os.lstat(os.path.join(e, "longlink")).st_size == len("x/" * 1500 + "end")
    assert os.lstat(os.path.join(e, "frac-mtime")).st_mtime_ns == (T0 * 10 ** 9) + 250_000_000
    x = os.path.join(e, "xattrs")
    names = os.listxattr(x)
    assert len(names) == 22 and "user.big" in names, names
    assert os.getxattr(x, "user.binary") == b"\x00\xff\xfe\x01"
    assert os.getxattr(x, "user.big") == bytes(range(256)) * 12
    assert os.listdir(os.path.join(e, "becomes-empty")) == []
    assert os.listdir(os.path.join(e, "empty")) == []
    assert Path(e, "mode-000").read_text() == "zero\n"       # root; default_permissions
    for name, size in (("exactly-1MiB", 1 << 20), ("1MiB-plus-1", (1 << 20) + 1)):
        p = os.path.join(e, name)
        drop_cache(p)
        with open(p, "rb") as f:
            data = f.read()
        assert len(data) == size
        assert data == pseudo_random(size, 5 if size == 1 << 20 else 6)


# -- a tag that moves while its old image is mounted -----------------------------------------

def test_tag_moves_while_mounted(mounter, imgvol, registry, publish):
    """v1 mounted; the tag is re-pushed with other content; `--pull always` mounts the new
    one; prune keeps every byte of the old (now untagged) image while it is mounted."""
    old_entries = [Dir("d", mtime=T0), File("d/old.bin", pseudo_random(2 << 20, 91), mtime=T0),
                   File("d/same.txt", "same\n", mtime=T0)]
    new_entries = [Dir("d", mtime=T0), File("d/new.bin", pseudo_random(1 << 20, 92), mtime=T0),
                   File("d/same.txt", "same\n", mtime=T0)]
    old = publish.image(registry.host, "e2e/moving", "latest", [Layer(old_entries, "gzip")])
    m_old = mounter.mount_ok(old.ref)
    new = publish.image(registry.host, "e2e/moving", "latest", [Layer(new_entries, "gzip")])
    assert new.manifest_digest != old.manifest_digest
    m_new = mounter.mount_ok(new.ref, None, "--pull", "always")
    assert sorted(os.listdir(os.path.join(m_new, "d"))) == ["new.bin", "same.txt"]
    listed = {m["mountpoint"]: m["digest"] for m in mounter.mounts()}
    assert listed == {m_old: old.manifest_digest, m_new: new.manifest_digest}, listed
    imgvol.prune_json()
    registry.stop()
    p = os.path.join(m_old, "d/old.bin")
    drop_cache(p)
    assert Path(p).read_bytes() == pseudo_random(2 << 20, 91), \
        "prune removed data of the old image while it was mounted"
    assert mounter.unmount(m_old).rc == 0
    assert imgvol.prune_json() >= old.layers[0].size, "the old image's layer should go now"
    assert Path(m_new, "d/new.bin").read_bytes() == pseudo_random(1 << 20, 92)
