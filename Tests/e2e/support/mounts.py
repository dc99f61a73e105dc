"""Helpers for tests of `imgvol mount` (real kernel FUSE mounts).

    m = Mounter(imgvol, tmp_path)            # the `mounter` fixture in conftest.py
    mp = m.mount_ok(ref)                     # -> a fresh mountpoint, asserted mounted
    res = m.mount(ref, mp, "--subpath", "x") # Result, never raises
    m.unmount(mp)
    m.mounts()                               # `imgvol mounts --format json`
    p = m.foreground(ref, mp)                # `--foreground` as a Popen
    m.cleanup()                              # teardown: unmount --force, umount -l, kill

Every mountpoint a Mounter touches is recorded; ``cleanup()`` (run by the fixture, pass
or fail) asks imgvol to unmount it with --force, then falls back to ``umount -l``, and
finally SIGKILLs the server processes it saw (found through `imgvol mounts`), only those.
An atexit hook does the same for Mounters a crashed session left behind.

Also: ``proc_mounts()``/``mount_entry(mp)``/``is_mounted(mp)`` (parsed /proc/mounts),
``wait_until(pred)``, ``readdir(path)`` (raw readdir(3) via ctypes, so "." and ".." and
d_ino/d_type are visible), ``drop_cache(path)`` (posix_fadvise DONTNEED, so the next read
goes to the FUSE server), ``sha256_file``, ``pids_mentioning(text)``.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import signal
import subprocess
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .cli import Imgvol, Result, run as _run

FSTYPE = "fuse.imgvol"


# -- /proc/mounts ---------------------------------------------------------------------------

def _unescape(s: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


@dataclass
class MountEntry:
    source: str
    target: str
    fstype: str
    options: List[str]

    def has(self, opt: str) -> bool:
        return opt in self.options


def proc_mounts() -> List[MountEntry]:
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4:
                continue
            out.append(MountEntry(_unescape(parts[0]), _unescape(parts[1]), parts[2],
                                  parts[3].split(",")))
    return out


def _real(path) -> str:
    return os.path.realpath(str(path))


def mount_entries(mp) -> List[MountEntry]:
    target = _real(mp)
    return [e for e in proc_mounts() if e.target == target]


def mount_entry(mp) -> Optional[MountEntry]:
    """The top-most /proc/mounts entry on mp, or None."""
    es = mount_entries(mp)
    return es[-1] if es else None


def is_mounted(mp) -> bool:
    return mount_entry(mp) is not None


def imgvol_mounts_under(prefix) -> List[MountEntry]:
    prefix = _real(prefix).rstrip("/") + "/"
    return [e for e in proc_mounts()
            if e.fstype == FSTYPE and (e.target + "/").startswith(prefix)]


def mounts_under(prefix) -> List[MountEntry]:
    """All mounts (any type) at or below prefix, deepest last."""
    prefix = _real(prefix).rstrip("/") + "/"
    return [e for e in proc_mounts() if (e.target + "/").startswith(prefix)]


def lazy_umount(mp) -> None:
    """Best-effort detach of whatever is mounted on mp (all stacked mounts)."""
    for _ in range(8):
        if not is_mounted(mp):
            return
        r = _run(["umount", "-l", _real(mp)], timeout=30)
        if r.rc != 0:
            _run(["fusermount3", "-uz", _real(mp)], timeout=30)


# -- waiting --------------------------------------------------------------------------------

def wait_until(pred: Callable[[], object], timeout: float = 15, interval: float = 0.05,
               what: str = "condition"):
    """Poll pred until it returns something truthy; return that.  AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def pids_mentioning(text: str) -> List[int]:
    """Live processes whose command line contains text (e.g. a unique mountpoint)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            args = cmdline(int(d))
            if any(text in a for a in args) and pid_alive(int(d)):
                out.append(int(d))
    return out


def kill_mount_processes(listed: dict) -> None:
    """SIGKILL a mount's keeper, then its server (an `imgvol mounts` entry), and wait until
    both are gone: everything holding the mount's /dev/fuse descriptor dies."""
    pids = [p for p in (listed.get("keeper"), listed.get("pid")) if isinstance(p, int)]
    for pid in pids:
        kill_pid(pid)
    for pid in pids:
        wait_until(lambda: not pid_alive(pid), 30, what=f"process {pid} to die after SIGKILL")


def kill_pid(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- file access ----------------------------------------------------------------------------

def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def drop_cache(path) -> None:
    """Ask the kernel to drop its page cache for one file, so reads reach the server."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Dirent(ctypes.Structure):          # glibc x86_64/aarch64 struct dirent (== dirent64)
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]

DT_TYPES = {1: "fifo", 2: "char", 4: "dir", 6: "block", 8: "file", 10: "symlink",
            12: "socket", 0: "unknown"}


def readdir(path) -> List[Tuple[str, int, str]]:
    """[(name, d_ino, d_type name)] straight from readdir(3), "." and ".." included."""
    d = _libc.opendir(os.fsencode(str(path)))
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    out = []
    try:
        while True:
            ctypes.set_errno(0)
            ent = _libc.readdir(d)
            if not ent:
                e = ctypes.get_errno()
                if e:
                    raise OSError(e, os.strerror(e), str(path))
                break
            c = ent.contents
            out.append((os.fsdecode(c.d_name), c.d_ino, DT_TYPES.get(c.d_type, str(c.d_type))))
    finally:
        _libc.closedir(d)
    return out


def errno_of(fn: Callable, *args, **kw) -> Optional[int]:
    """Call fn; return the errno of the OSError it raised, or None if it succeeded."""
    try:
        r = fn(*args, **kw)
        if isinstance(r, int) and fn is os.open:
            os.close(r)
        return None
    except OSError as e:
        return e.errno


def errname(e: Optional[int]) -> str:
    return "success" if e is None else errno.errorcode.get(e, str(e))


# -- the Mounter ----------------------------------------------------------------------------

_LIVE: "weakref.WeakSet[Mounter]" = weakref.WeakSet()


def _cleanup_all() -> None:
    for m in list(_LIVE):
        try:
            m.cleanup()
        except Exception:
            pass


atexit.register(_cleanup_all)


class Mounter:
    """Mounts through one Imgvol (one --root), remembering everything to clean up."""

    def __init__(self, imgvol: Imgvol, base: Path):
        self.imgvol = imgvol
        self.base = Path(base)
        self.n = 0
        self.mountpoints: List[str] = []
        self.server_pids: set = set()
        self.popens: List[subprocess.Popen] = []
        _LIVE.add(self)

    # bookkeeping
    def _record(self, mp) -> str:
        mp = str(mp)
        if mp not in self.mountpoints:
            self.mountpoints.append(mp)
        return mp

    def _note_servers(self) -> None:
        try:
            mine = set(self.mountpoints)
            for m in self.mounts(check=False):
                if m.get("mountpoint") in mine:
                    # Its keeper first: a keeper left alive would start its server again.
                    for pid in (m.get("keeper"), m.get("pid")):
                        if isinstance(pid, int):
                            self.server_pids.add(pid)
        except Exception:
            pass

    def mountpoint(self, name: Optional[str] = None) -> str:
        """A fresh empty directory to mount on (recorded for cleanup)."""
        self.n += 1
        d = self.base / "mnt" / (name or f"m{self.n}")
        d.mkdir(parents=True, exist_ok=False)
        return self._record(d)

    # commands
    def mount(self, ref: str, mp=None, *flags: str, insecure: bool = True,
              timeout: float = 180, root: Optional[str] = "default") -> Result:
        """`imgvol mount REF MP [flags]` (+ --tls-verify=false); never raises."""
        if mp is None:
            mp = self.mountpoint()
        mp = self._record(mp)
        extra = ["--tls-verify=false"] if insecure else []
        res = self.imgvol.run("mount", ref, mp, *extra, *flags, timeout=timeout, root=root)
        self._note_servers()
        return res

    def mount_ok(self, ref: str, mp=None, *flags: str, **kw) -> str:
        """Mount and assert it worked: exit 0, stdout names the mountpoint, it is mounted."""
        if mp is None:
            mp = self.mountpoint()
        res = self.mount(ref, mp, *flags, **kw)
        assert res.rc == 0, res.describe()
        assert res.stdout.strip().splitlines() == [str(mp)], \
            f"mount should print the mountpoint (only) on stdout\n{res.describe()}"
        e = mount_entry(mp)
        assert e is not None and e.fstype == FSTYPE, \
            f"{mp} is not an imgvol mount after `mount` returned: {e}\n{res.describe()}"
        return str(mp)

    def unmount(self, mp, *flags: str, timeout: float = 60) -> Result:
        self._note_servers()
        return self.imgvol.run("unmount", str(mp), *flags, timeout=timeout)

    def mounts(self, check: bool = True) -> List[dict]:
        res = self.imgvol.run("mounts", "--format", "json", timeout=30)
        if not check and res.rc != 0:
            return []
        assert res.rc == 0, res.describe()
        try:
            data = json.loads(res.stdout)
        except ValueError as e:
            raise AssertionError(f"mounts --format json is not JSON ({e}):\n{res.describe()}")
        assert isinstance(data, list), res.describe()
        return data

    def listed(self, mp) -> Optional[dict]:
        for m in self.mounts():
            if m.get("mountpoint") == str(mp):
                return m
        return None

    def foreground(self, ref: str, mp=None, *flags: str, insecure: bool = True
                   ) -> Tuple[subprocess.Popen, str]:
        """Start `imgvol mount --foreground` (stdout/stderr to files next to mp)."""
        if mp is None:
            mp = self.mountpoint()
        mp = self._record(mp)
        extra = ["--tls-verify=false"] if insecure else []
        out = open(str(mp) + ".stdout", "w")
        err = open(str(mp) + ".stderr", "w")
        p = subprocess.Popen(self.imgvol.argv("mount", ref, mp, "--foreground", *extra, *flags),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             env=self.imgvol.env, start_new_session=True)
        out.close()
        err.close()
        p.out_path, p.err_path = str(mp) + ".stdout", str(mp) + ".stderr"
        self.popens.append(p)
        return p, mp

    # teardown
    def cleanup(self) -> None:
        self._note_servers()
        for mp in reversed(self.mountpoints):
            if is_mounted(mp) and mount_entry(mp).fstype == FSTYPE:
                self.imgvol.run("unmount", mp, "--force", timeout=30)
            lazy_umount(mp)
        for p in self.popens:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for pid in sorted(self.server_pids, key=lambda p: "__keep" not in cmdline(p)):
            if pid_alive(pid) and any("imgvol" in a for a in cmdline(pid)[:1]):
                kill_pid(pid)
        for mp in self.mountpoints:           # servers nobody listed (e.g. failed mounts)
            for pid in pids_mentioning(mp):
                if any("imgvol" in a for a in cmdline(pid)[:1]):
                    kill_pid(pid)
        self.mountpoints.clear()
        self.popens.clear()
        self.server_pids.clear()


def read_tree_digests(root) -> Dict[str, str]:
    """{relative path: sha256} of every regular file under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for n in filenames:
            full = os.path.join(dirpath, n)
            if os.path.isfile(full) and not os.path.islink(full):
                out[os.path.relpath(full, str(root))] = sha256_file(full)
    return out


# -- a small image with a models/ directory (subpath, podman and plugin tests) -----------------

def models_entries():
    """Two layers: models/ with files, a nested dir, a symlink; an upper-layer whiteout."""
    from .images import T0, pseudo_random
    from .oci_layout import Dir, File, Symlink, Whiteout
    l1 = [
        Dir("etc", mtime=T0), File("etc/hostname", "box\n", mtime=T0),
        File("README", "top level\n", mtime=T0),
        Dir("models", mode=0o755, mtime=T0 + 1),
        File("models/config.json", '{"layers": 2}\n', mtime=T0 + 2),
        Dir("models/weights", mtime=T0 + 3),
        File("models/weights/part-0.bin", pseudo_random(256 * 1024, 11), mtime=T0 + 4),
        File("models/weights/part-1.bin", pseudo_random(100 * 1024 + 7, 12), mtime=T0 + 5),
        File("models/old.txt", "old\n", mtime=T0 + 6),
        Symlink("models/latest", "weights/part-1.bin", mtime=T0 + 7),
    ]
    l2 = [
        Whiteout("models/old.txt"),
        File("models/tokenizer.json", '{"vocab": 3}\n', mode=0o640, uid=7, gid=8,
             mtime=T0 + 8),
        Dir("models/empty", mode=0o750, mtime=T0 + 9),
    ]
    return [l1, l2]


def subtree(tree: dict, prefix: str) -> dict:
    """The part of an expected/walked tree below prefix, re-rooted (prefix itself dropped)."""
    prefix = prefix.strip("/") + "/"
    return {p[len(prefix):]: n for p, n in tree.items() if p.startswith(prefix)}


# -- raw getdents64 with a small buffer (many READDIR requests with offsets) -----------------

_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine)
_libc.syscall.restype = ctypes.c_long


def getdents_names(path, bufsize: int = 512) -> List[str]:
    """Every name getdents64(2) returns for a directory, reading bufsize bytes at a time."""
    if _SYS_GETDENTS64 is None:
        raise OSError(errno.ENOSYS, "getdents64 syscall number unknown for this machine")
    fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    buf = ctypes.create_string_buffer(bufsize)
    names = []
    try:
        while True:
            n = _libc.syscall(ctypes.c_long(_SYS_GETDENTS64), ctypes.c_int(fd), buf,
                              ctypes.c_uint(bufsize))
            if n < 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), str(path))
            if n == 0:
                break
            raw = buf.raw[:n]
            pos = 0
            while pos < n:
                reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
                names.append(os.fsdecode(name))
                pos += reclen
    finally:
        os.close(fd)
    return names
