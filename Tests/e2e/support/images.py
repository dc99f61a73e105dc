"""Canned test images (lists of layers), shared by the e2e tests, demos and benches.

Each function returns a list of ``Layer`` objects; ``rich_layers()`` exercises most
of what an unpacker must get right.  Entries use fixed mtimes and contents, so the
digests are stable except where random bytes are asked for (``seed`` makes those
deterministic too).
"""

from __future__ import annotations

import random
from typing import List

from .oci_layout import (BlockDev, CharDev, Dir, Fifo, File, Hardlink, Layer, Opaque, Symlink,
                         Whiteout)

T0 = 1700000000


def pseudo_random(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def small_layers(tag: str = "small", compression: str = "gzip") -> List[Layer]:
    """One tiny layer; content depends on `tag` so different tags differ."""
    return [Layer([Dir("etc", mtime=T0),
                   File("etc/os-release", f"ID=imgvol-e2e\nVARIANT={tag}\n", mtime=T0),
                   File(f"{tag}.txt", f"{tag}\n", mtime=T0)], compression)]


def base_layer(compression: str = "gzip", size: int = 64 * 1024, seed: int = 1) -> Layer:
    """A layer meant to be shared by several images (rm/prune tests)."""
    return Layer([Dir("shared", mtime=T0),
                  File("shared/blob.bin", pseudo_random(size, seed), mtime=T0)], compression)


def big_layers(size: int = 4 << 20, seed: int = 7, compression: str = "gzip") -> List[Layer]:
    """One layer with an incompressible file of `size` bytes (resume/kill tests)."""
    return [Layer([Dir("data", mtime=T0),
                   File("data/big.bin", pseudo_random(size, seed), mtime=T0)], compression)]


LONG_DIR = "deep/" + "/".join(["d" * 40] * 3)          # > 100 chars: needs PAX path


def rich_entries():
    """Three layers of entries (plain lists, before compression)."""
    l1 = [
        Dir("etc", mtime=T0),
        File("etc/hostname", "box\n", mtime=T0 + 1),
        File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", mtime=T0 + 2),
        Dir("usr", mtime=T0), Dir("usr/bin", mtime=T0), Dir("usr/lib", mtime=T0),
        File("usr/lib/old.so", "old\n", mode=0o755, mtime=T0),
        File("usr/lib/keep-gone.so", "gone\n", mode=0o755, mtime=T0),
        File("usr/bin/tool", "#!/bin/sh\necho tool\n", mode=0o4755, mtime=T0 + 3),
        File("usr/bin/sgid", "#!/bin/sh\n", mode=0o2755, gid=42, mtime=T0 + 4),
        Hardlink("usr/bin/tool-link", "usr/bin/tool"),
        Symlink("bin", "usr/bin", mtime=T0),
        Symlink("usr/bin/abs", "/etc/hostname", mtime=T0),
        Symlink("dangling", "does/not/exist", mtime=T0),
        Dir("tmp", mode=0o1777, mtime=T0),
        Dir("var", mtime=T0), Dir("var/tmp", mode=0o1777, mtime=T0),
        File("var/tmp/junk", "junk\n", mtime=T0),
        Dir("home", mtime=T0),
        Dir("home/alice", mode=0o700, uid=1000, gid=1000, mtime=T0 + 5),
        File("home/alice/notes", "private\n", mode=0o600, uid=1000, gid=1000, mtime=T0 + 6),
        Dir("srv", mode=0o2775, gid=50, mtime=T0),
        File("srv/big.bin", pseudo_random(300 * 1024, 3), mtime=T0 + 7),
        File("srv/empty", b"", mtime=T0 + 8),
        File("srv/highids", "ids\n", uid=100000, gid=200000, mtime=T0 + 9),
        File("srv/xattr", "x\n", xattrs={"user.comment": b"hello", "user.other": b"42",
                                          "trusted.note": b"t"}, mtime=T0 + 10),
        File("srv/na\u00efve file.txt", "unicode + space\n", mtime=T0 + 11),
        Dir("deep", mtime=T0),
        *[Dir("/".join(LONG_DIR.split("/")[:i]), mtime=T0)
          for i in range(2, len(LONG_DIR.split("/")) + 1)],
        File(LONG_DIR + "/long-name-" + "x" * 120, "long\n", mtime=T0 + 12),
        Dir("run", mtime=T0),
        Fifo("run/fifo", mode=0o600, mtime=T0 + 13),
        Dir("dev", mtime=T0),
        CharDev("dev/null", 1, 3, mode=0o666, mtime=T0),
        BlockDev("dev/loop9", 7, 9, mode=0o660, gid=6, mtime=T0),
        Dir("replace-dir-with-file", mtime=T0),
        File("replace-dir-with-file/child", "c\n", mtime=T0),
        File("replace-file-with-dir", "f\n", mtime=T0),
        Dir("opaque-me", mtime=T0),
        File("opaque-me/lower", "lower\n", mtime=T0),
    ]
    l2 = [
        Whiteout("etc/hostname"),
        File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
             mtime=T0 + 20),
        Opaque("usr/lib"),
        Dir("usr/lib", mode=0o755, mtime=T0 + 21),
        File("usr/lib/new.so", "new\n", mode=0o755, mtime=T0 + 22),
        Whiteout("replace-dir-with-file"),
        File("replace-dir-with-file", "now a file\n", mtime=T0 + 23),
        Dir("replace-file-with-dir", mode=0o750, mtime=T0 + 24),
        File("replace-file-with-dir/inside", "in\n", mtime=T0 + 25),
        Opaque("opaque-me"),
        File("opaque-me/upper", "upper\n", mtime=T0 + 26),
        Dir("home/alice", mode=0o750, uid=1000, gid=1000, mtime=T0 + 27),   # chmod
    ]
    l3 = [
        Whiteout("var/tmp"),
        File("etc/motd", "hi\n", mtime=T0 + 30),
        Hardlink("etc/passwd-link", "etc/passwd"),      # to a file from the layer below
        Dir("opt", mtime=T0 + 31),
        File("opt/setuid-root", "s\n", mode=0o6755, mtime=T0 + 32),
        Dir("opt/sticky", mode=0o1755, mtime=T0 + 33),
    ]
    return [l1, l2, l3]


def rich_layers(compressions=("gzip", "zstd", "none")) -> List[Layer]:
    return [Layer(entries, c) for entries, c in zip(rich_entries(), compressions)]


def whiteout_entries():
    """Multi-layer whiteout / opaque scenarios only (no devices)."""
    l1 = [Dir("a", mtime=T0), File("a/1", "1", mtime=T0), File("a/2", "2", mtime=T0),
          Dir("a/sub", mtime=T0), File("a/sub/x", "x", mtime=T0),
          Dir("b", mtime=T0), File("b/keep", "k", mtime=T0), File("b/gone", "g", mtime=T0),
          Dir("c", mtime=T0), File("c/lower", "l", mtime=T0), File("top", "t", mtime=T0)]
    l2 = [Whiteout("a/sub"), Whiteout("b/gone"), Opaque("c"), File("c/upper", "u", mtime=T0),
          Whiteout("top")]
    l3 = [File("a/sub", "now a file", mtime=T0), Whiteout("a/1"), Dir("c", mode=0o700, mtime=T0)]
    return [l1, l2, l3]
