"""Hostile layers: nothing may be written, changed or deleted outside the unpack DIR.

Each case is either rejected (pull or unpack fails with an error naming the layer
digest) or normalised inside DIR; in every case a snapshot of the directories around
DIR (with sentinel files, and a directory that absolute/symlinked paths point at)
must be unchanged afterwards.

Absolute targets point into the test's temp dir (never the host's /etc), so a buggy
unpacker cannot damage the machine.
"""

import os
import stat

import pytest

from support.cli import DIGEST_RE, pull_then_unpack
from support.oci_layout import Dir, File, Hardlink, Layer, Opaque, Symlink, Whiteout
from support.tree import assert_trees_equal, walk

UP5 = "../" * 5          # from DIR/x: x -> DIR -> b -> a -> work -> base


def cases(out: str):
    """name -> list of layers (each a list of entries).  `out` = absolute path of the
    directory outside DIR that holds `sentinel`."""
    return {
        "dotdot-file": [[File("../escape", "pwned")]],
        "dotdot-deep": [[Dir("x"), File("x/" + UP5 + "outside/sentinel", "pwned")]],
        "dotdot-dir": [[Dir("../escape-dir", mode=0o777)]],
        "absolute-file": [[File(out + "/abs-file", "pwned")]],
        "absolute-over-sentinel": [[File(out + "/sentinel", "pwned")]],
        "hardlink-dotdot": [[Hardlink("h", "../escape")]],
        "hardlink-absolute": [[Hardlink("h", out + "/sentinel")]],
        "hardlink-missing-target": [[Hardlink("h", "does/not/exist")]],
        "symlink-abs-then-file": [[Symlink("evil", out), File("evil/sentinel", "pwned")]],
        "symlink-abs-then-file-next-layer": [[Symlink("evil", out)],
                                             [File("evil/sentinel", "pwned")]],
        "symlink-rel-then-file": [[Symlink("evil", "../../../../outside"),
                                   File("evil/sentinel", "pwned")]],
        "symlink-then-new-file": [[Symlink("evil", out), File("evil/new-file", "pwned")]],
        "symlink-then-dir-then-file": [[Symlink("evil", out)],
                                       [Dir("evil/sub"), File("evil/sub/f", "pwned")]],
        "symlink-then-chmod-dir": [[Symlink("evil", out)],
                                   [Dir("evil", mode=0o777, uid=4321, gid=4321)]],
        "symlink-then-whiteout": [[Symlink("evil", out)], [Whiteout("evil/sentinel")]],
        "symlink-then-opaque": [[Symlink("evil", out)], [Opaque("evil")]],
        "symlink-then-hardlink": [[Symlink("evil", out), Hardlink("h", "evil/sentinel")]],
        "file-over-symlink-same-layer": [[Symlink("link", out + "/sentinel"),
                                          File("link", "pwned")]],
        "file-over-symlink-next-layer": [[Symlink("link", out + "/sentinel")],
                                         [File("link", "pwned", mode=0o777)]],
        "hardlink-over-symlink": [[File("f", "inside"), Symlink("link", out + "/sentinel")],
                                  [Hardlink("link", "f")]],
        "dotdot-whiteout": [[File("../.wh.escape")]],
        "dotdot-opaque": [[File("../.wh..wh..opq")]],
        "absolute-whiteout": [[File(out + "/.wh.sentinel")]],
        "symlink-loop": [[Symlink("loop1", "loop2"), Symlink("loop2", "loop1"),
                          File("loop1/x", "pwned")]],
        "dir-symlink-chain": [[Dir("d"), Symlink("d/up", ".."), Symlink("d/up2", "up/.."),
                               File("d/up2/../../escape", "pwned")]],
        # A combining mark after "/" makes one grapheme with it: a split by Character sees
        # no separator there, the kernel does.
        "combining-mark-after-slash": [[File("../\u0301escape", "pwned")]],
        "combining-mark-deep": [[Dir("x"), File("x/../../\u0301escape", "pwned")]],
        "combining-mark-dir": [[Dir("../\u0301d", mode=0o777), File("../\u0301d/f", "pwned")]],
    }


CASE_NAMES = sorted(cases("/x"))


@pytest.fixture
def arena(tmp_path):
    """base/
         work/a/b/escape        sentinel next to DIR's parent
         work/a/b/rootfs/       DIR (empty, so b's mtime does not change)
         outside/sentinel       target of absolute and symlinked paths
    """
    base = tmp_path / "arena"
    b = base / "work" / "a" / "b"
    dest = b / "rootfs"
    dest.mkdir(parents=True)
    (b / "escape").write_text("sentinel-escape\n")
    out = base / "outside"
    out.mkdir()
    (out / "sentinel").write_text("sentinel\n")
    os.chmod(out / "sentinel", 0o644)
    os.chmod(out, 0o755)
    return base, dest, out


def snapshot(base, dest):
    rel = os.path.relpath(dest, base)
    return {p: n for p, n in walk(str(base)).items()
            if p != rel and not p.startswith(rel + "/")}


@pytest.mark.parametrize("case", CASE_NAMES)
def test_hostile_layer(imgvol, registry, publish, arena, case):
    base, dest, out = arena
    entries = cases(str(out))[case]
    layers = [Layer(e, "gzip") for e in entries]
    info = publish.image(registry.host, f"e2e/hostile-{case}", "v1", layers)
    before = snapshot(base, dest)
    sentinel_ino = os.stat(out / "sentinel").st_ino
    escape_ino = os.stat(base / "work" / "a" / "b" / "escape").st_ino

    res = pull_then_unpack(imgvol, info.ref, dest)

    # 1. nothing outside DIR changed
    assert_trees_equal(before, snapshot(base, dest), "before", f"after {case}")
    assert (out / "sentinel").read_text() == "sentinel\n"
    # 2. nothing inside DIR is the outside files (a hardlink would let a later write leak)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                assert st.st_ino not in (sentinel_ino, escape_ino), \
                    f"{os.path.join(dirpath, name)} is hardlinked to a file outside DIR"
    # 3. a failure is clean and names the layer
    if res.rc != 0:
        assert not res.timed_out, res.describe()
        assert res.rc > 0, f"crashed instead of failing\n{res.describe()}"
        assert res.error_lines(), res.describe()
        assert any(d in res.stderr for d in info.layer_digests), \
            f"the error should name the offending layer digest\n{res.describe()}"
        assert not DIGEST_RE.match(res.last_line or "-"), res.describe()
    else:
        # normalised inside DIR: every symlink in DIR stays a symlink, no path escapes
        real_dest = os.path.realpath(dest)
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                assert os.path.realpath(os.path.dirname(p)).startswith(real_dest), p


def test_hostile_absolute_path_in_host_root(imgvol, registry, publish, tmp_path):
    """`/abs/path` style entry whose literal path would land in the host's /.  Uses a
    unique name and removes it again if a buggy unpacker created it."""
    name = f"/imgvol-e2e-abs-{os.getpid()}-{tmp_path.name}"
    assert not os.path.exists(name)
    layer = Layer([File(name + "/path", "pwned")], "gzip")
    info = publish.image(registry.host, "e2e/hostile-root-abs", "v1", [layer])
    dest = tmp_path / "dest"
    try:
        res = pull_then_unpack(imgvol, info.ref, dest)
        assert not os.path.exists(name), f"{name} was created on the host"
        if res.rc != 0:
            assert layer.digest in res.stderr, res.describe()
        else:
            assert (dest / name.lstrip("/") / "path").read_text() == "pwned"
    finally:
        if os.path.lexists(name):
            import shutil
            shutil.rmtree(name, ignore_errors=True)
