"""Snapshot a directory tree's metadata and diff two snapshots.

    t = walk("/tmp/unpacked")                 # {path: Node}
    t["etc/passwd"].mode, t["bin"].target
    hardlink_groups("/tmp/unpacked")          # [{"a", "b"}, ...]
    assert_trees_equal(walk(a), walk(b), "imgvol", "umoci", ignore=("dev/",))

``expected_tree(layers)`` models what applying a list of layers (lists of
``oci_layout.Entry``) should produce, including whiteouts, opaque directories
and hardlinks, so a test can check an unpack without another tool.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, fields, replace
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFIFO: "fifo", stat.S_IFCHR: "char", stat.S_IFBLK: "block",
         stat.S_IFSOCK: "socket"}


@dataclass(frozen=True)
class Node:
    type: str
    mode: int                 # permission bits incl. setuid/setgid/sticky (st_mode & 0o7777)
    uid: int
    gid: int
    size: Optional[int] = None        # files only
    sha256: Optional[str] = None      # files only
    target: Optional[str] = None      # symlinks only
    xattrs: Tuple[Tuple[str, bytes], ...] = ()
    mtime: Optional[int] = None       # whole seconds; None when not compared
    rdev: Optional[Tuple[int, int]] = None   # (major, minor) for devices

    def short(self) -> str:
        parts = [self.type, oct(self.mode), f"{self.uid}:{self.gid}"]
        if self.size is not None:
            parts.append(f"size={self.size}")
        if self.sha256:
            parts.append(f"sha256={self.sha256[:12]}")
        if self.target is not None:
            parts.append(f"-> {self.target}")
        if self.rdev is not None:
            parts.append(f"dev={self.rdev[0]},{self.rdev[1]}")
        if self.xattrs:
            parts.append("xattrs=" + ",".join(f"{k}={v!r}" for k, v in self.xattrs))
        if self.mtime is not None:
            parts.append(f"mtime={self.mtime}")
        return " ".join(parts)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: str, skip: Sequence[str]) -> Tuple[Tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        if any(n.startswith(p) for p in skip):
            continue
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            pass
    return tuple(out)


def node_for(path: str, mtimes: bool = True,
             skip_xattrs: Sequence[str] = ("security.selinux",)) -> Node:
    st = os.lstat(path)
    typ = TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
    return Node(
        type=typ,
        mode=stat.S_IMODE(st.st_mode) if typ != "symlink" else 0o777,
        uid=st.st_uid, gid=st.st_gid,
        size=st.st_size if typ == "file" else None,
        sha256=_sha256_file(path) if typ == "file" else None,
        target=os.readlink(path) if typ == "symlink" else None,
        xattrs=_xattrs(path, skip_xattrs),
        mtime=int(st.st_mtime) if mtimes else None,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if typ in ("char", "block") else None,
    )


def walk(root: str, mtimes: bool = True, skip_xattrs: Sequence[str] = ("security.selinux",),
         include_root: bool = False) -> Dict[str, Node]:
    """{relative path: Node} for everything under root (root itself as "." if asked)."""
    out: Dict[str, Node] = {}
    if include_root:
        out["."] = node_for(root, mtimes, skip_xattrs)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            out[rel] = node_for(full, mtimes, skip_xattrs)
    return out


def hardlink_groups(root: str) -> List[Set[str]]:
    """Sets of relative paths (non-directories) that share an inode, largest first."""
    by_ino: Dict[Tuple[int, int], Set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            by_ino.setdefault((st.st_dev, st.st_ino), set()).add(os.path.relpath(full, root))
    groups = [g for g in by_ino.values() if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), sorted(g)))


def strip(tree: Dict[str, Node], *, mtime: bool = False, xattrs: bool = False,
          dir_mtime: bool = False, symlink_mtime: bool = False) -> Dict[str, Node]:
    """Drop fields from every node before comparing (e.g. mtime=True drops all mtimes)."""
    out = {}
    for p, n in tree.items():
        if mtime or (dir_mtime and n.type == "dir") or (symlink_mtime and n.type == "symlink"):
            n = replace(n, mtime=None)
        if xattrs:
            n = replace(n, xattrs=())
        out[p] = n
    return out


def filter_tree(tree: Dict[str, Node], exclude_types: Iterable[str] = (),
                exclude_prefixes: Iterable[str] = ()) -> Dict[str, Node]:
    exclude_types = set(exclude_types)
    prefixes = tuple(exclude_prefixes)
    return {p: n for p, n in tree.items()
            if n.type not in exclude_types and not (prefixes and p.startswith(prefixes))}


def diff_trees(a: Dict[str, Node], b: Dict[str, Node], label_a: str = "a",
               label_b: str = "b", limit: int = 60) -> List[str]:
    lines = []
    for p in sorted(set(a) | set(b)):
        na, nb = a.get(p), b.get(p)
        if na == nb:
            continue
        if na is None:
            lines.append(f"  only in {label_b}: {p}  [{nb.short()}]")
        elif nb is None:
            lines.append(f"  only in {label_a}: {p}  [{na.short()}]")
        else:
            diffs = []
            for f in fields(Node):
                va, vb = getattr(na, f.name), getattr(nb, f.name)
                if va != vb:
                    if f.name == "mode":
                        va, vb = oct(va), oct(vb)
                    diffs.append(f"{f.name}: {label_a}={va!r} {label_b}={vb!r}")
            lines.append(f"  differs: {p}: " + "; ".join(diffs))
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return lines


def assert_trees_equal(a: Dict[str, Node], b: Dict[str, Node], label_a: str = "a",
                       label_b: str = "b") -> None:
    lines = diff_trees(a, b, label_a, label_b)
    if lines:
        raise AssertionError(f"trees differ ({label_a} vs {label_b}):\n" + "\n".join(lines))


def format_tree(tree: Dict[str, Node]) -> str:
    return "\n".join(f"{p}: {n.short()}" for p, n in sorted(tree.items()))


# ---------------------------------------------------------------------------------------
# Model of layer application
# ---------------------------------------------------------------------------------------

def _norm(name: str) -> str:
    n = posixpath.normpath("/" + name).lstrip("/")
    return n


def expected_tree(layers: Sequence[Sequence], mtimes: bool = True) -> Dict[str, Node]:
    """What the merged tree of these layers should be (each layer a list of
    oci_layout.Entry, applied bottom to top with OCI whiteout semantics).

    Parent directories not declared in any layer are left out of the result
    (their metadata is the implementation's choice); compare with
    ``{p: n for p, n in walk(dir).items() if p in expected}`` or declare all dirs.
    """
    tree: Dict[str, Node] = {}

    def remove_under(path: str, keep: Set[str] = frozenset()):
        for p in [p for p in tree if p == path or p.startswith(path + "/")]:
            if p not in keep:
                del tree[p]

    for entries in layers:
        added_this_layer: Set[str] = set()
        for e in entries:
            name = _norm(e.name)
            base = posixpath.basename(name)
            parent = posixpath.dirname(name)
            if base == ".wh..wh..opq":
                remove_under_children = [p for p in tree
                                         if p.startswith(parent + "/" if parent else "")
                                         and p != parent and p not in added_this_layer]
                for p in remove_under_children:
                    del tree[p]
                continue
            if base.startswith(".wh."):
                target = posixpath.join(parent, base[4:])
                remove_under(target)
                continue
            xattrs = tuple(sorted((k, v if isinstance(v, bytes) else v.encode())
                                  for k, v in e.xattrs.items()))
            mtime = int(e.mtime) if mtimes else None
            if e.kind == "hardlink":
                src = tree.get(_norm(e.linkname))
                if src is None:
                    raise ValueError(f"hardlink {name} -> {e.linkname}: target missing")
                node = src
            elif e.kind == "file":
                node = Node("file", e.mode & 0o7777, e.uid, e.gid, len(e.content),
                            hashlib.sha256(e.content).hexdigest(), None, xattrs, mtime)
            elif e.kind == "dir":
                node = Node("dir", e.mode & 0o7777, e.uid, e.gid, None, None, None, xattrs,
                            mtime)
                if name in tree and tree[name].type == "dir":
                    pass  # directory metadata replaced, contents kept
                else:
                    remove_under(name)
            elif e.kind == "symlink":
                node = Node("symlink", 0o777, e.uid, e.gid, None, None, e.linkname, xattrs,
                            mtime)
            elif e.kind == "fifo":
                node = Node("fifo", e.mode & 0o7777, e.uid, e.gid, None, None, None, xattrs,
                            mtime)
            elif e.kind in ("char", "block"):
                node = Node(e.kind, e.mode & 0o7777, e.uid, e.gid, None, None, None, xattrs,
                            mtime, (e.devmajor, e.devminor))
            else:
                raise ValueError(e.kind)
            if e.kind != "dir":
                remove_under(name)
            tree[name] = node
            added_this_layer.add(name)
    return tree
