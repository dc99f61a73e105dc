"""Concurrent readers of a mount, for failover tests: they keep reading while a test kills
the mount's server, and record every error and every wrong byte.

    r = Readers(mp, big={"model.bin": chunk_digests}, small={"d/f.txt": sha256, ...})
    r.start(8)          # sequential reads, random preads with sha256 checks, one mmap reader
    ...                 # kill servers
    r.stop()            # joins; r.errors lists what went wrong, r.ops counts what was done

Reads are of whole 1 MiB chunks at MiB-aligned offsets, checked against the chunk's sha256
(`chunk_digests(data)`). Each reader drops the file's cached pages after it reads (and the
mmap reader drops its mapping's pages) so that later reads reach the server again; every
pass opens the file again, so opens reach it too. Each read is timed: `longest` is the
longest single read (a stall across a server kill).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import threading
import time
from typing import Dict, List

CHUNK = 1 << 20


def chunk_digests(data: bytes) -> List[str]:
    return [hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]


class Readers:
    def __init__(self, mountpoint: str, big: Dict[str, List[str]], small: Dict[str, str], seed: int = 1):
        self.mp = mountpoint
        self.big = big
        self.small = small
        self.seed = seed
        self.errors: List[str] = []
        self.ops: Dict[str, int] = {}
        self.longest = 0.0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    # bookkeeping
    def _fail(self, who: str, what: str) -> None:
        with self._lock:
            self.errors.append(f"{who}: {what}")

    def _did(self, who: str, seconds: float) -> None:
        with self._lock:
            self.ops[who] = self.ops.get(who, 0) + 1
            self.longest = max(self.longest, seconds)

    def _check(self, who: str, path: str, index: int, data: bytes, digests: List[str]) -> None:
        if hashlib.sha256(data).hexdigest() != digests[index]:
            self._fail(who, f"{path} chunk {index}: wrong bytes ({len(data)} read)")

    # the readers
    def _sequential(self, who: str, rel: str) -> None:
        digests = self.big[rel]
        path = os.path.join(self.mp, rel)
        while not self._stop.is_set():
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    for i in range(len(digests)):
                        if self._stop.is_set():
                            break
                        t = time.monotonic()
                        data = os.pread(fd, CHUNK, i * CHUNK)
                        self._did(who, time.monotonic() - t)
                        self._check(who, rel, i, data, digests)
                        os.posix_fadvise(fd, i * CHUNK, CHUNK, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
            except OSError as e:
                self._fail(who, f"{rel}: {e!r}")

    def _random(self, who: str, rel: str, rng: random.Random) -> None:
        digests = self.big[rel]
        path = os.path.join(self.mp, rel)
        try:
            fd = os.open(path, os.O_RDONLY)     # opened once, before any kill: an old open
        except OSError as e:
            self._fail(who, f"open {rel}: {e!r}")
            return
        try:
            while not self._stop.is_set():
                i = rng.randrange(len(digests))
                try:
                    t = time.monotonic()
                    data = os.pread(fd, CHUNK, i * CHUNK)
                    self._did(who, time.monotonic() - t)
                    self._check(who, rel, i, data, digests)
                    os.posix_fadvise(fd, i * CHUNK, CHUNK, os.POSIX_FADV_DONTNEED)
                except OSError as e:
                    self._fail(who, f"pread {rel} chunk {i}: {e!r}")
        finally:
            os.close(fd)

    def _mmap(self, who: str, rel: str, rng: random.Random) -> None:
        """In a child process: a page fault holds Python's GIL, so a fault waiting for a
        server would stall every reader thread (and the test) with it. The child reports
        each read as a line: "ok SECONDS" or "err MESSAGE"."""
        import json
        import subprocess
        import sys
        digests = self.big[rel]
        child = subprocess.Popen([sys.executable, __file__, os.path.join(self.mp, rel), str(rng.random())],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            child.stdin.write(json.dumps(digests) + "\n")
            child.stdin.flush()
            stopper = threading.Thread(target=lambda: (self._stop.wait(), child.stdin.close()), daemon=True)
            stopper.start()
            for line in child.stdout:
                kind, _, rest = line.strip().partition(" ")
                if kind == "ok":
                    self._did(who, float(rest))
                else:
                    self._fail(who, rest)
        finally:
            if child.wait(120) != 0:
                self._fail(who, f"the mmap reader exited with {child.returncode} (SIGBUS is -7)")

    def _tree(self, who: str, rng: random.Random) -> None:
        names = sorted(self.small)
        while not self._stop.is_set():
            try:
                for top in os.scandir(self.mp):      # readdir and stat through the mount
                    top.stat(follow_symlinks=False)
            except OSError as e:
                self._fail(who, f"readdir {self.mp}: {e!r}")
            for rel in rng.sample(names, min(len(names), 200)):
                if self._stop.is_set():
                    break
                path = os.path.join(self.mp, rel)
                try:
                    t = time.monotonic()
                    os.stat(path)
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        data = os.read(fd, 1 << 24)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)
                    self._did(who, time.monotonic() - t)
                    if hashlib.sha256(data).hexdigest() != self.small[rel]:
                        self._fail(who, f"{rel}: wrong bytes")
                except OSError as e:
                    self._fail(who, f"{rel}: {e!r}")

    def start(self, count: int = 8) -> "Readers":
        """`count` readers: with a big file, 2 sequential, 1 mmap, the rest random preads
        (and 2 tree walkers when there are small files); without one, all walk the tree."""
        rng = random.Random(self.seed)
        plan = []
        bigs = sorted(self.big)
        if bigs:
            walkers = 2 if self.small else 0
            plan += [("seq", bigs[k % len(bigs)]) for k in range(2)]
            plan += [("mmap", bigs[0])]
            plan += [("rand", bigs[k % len(bigs)]) for k in range(count - 3 - walkers)]
            plan += [("tree", None)] * walkers
        else:
            plan = [("tree", None)] * count
        for n, (kind, rel) in enumerate(plan):
            who = f"{kind}{n}"
            target = {"seq": lambda w=who, r=rel: self._sequential(w, r),
                      "rand": lambda w=who, r=rel, g=random.Random(rng.random()): self._random(w, r, g),
                      "mmap": lambda w=who, r=rel, g=random.Random(rng.random()): self._mmap(w, r, g),
                      "tree": lambda w=who, g=random.Random(rng.random()): self._tree(w, g)}[kind]
            t = threading.Thread(target=target, name=who, daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def wait_for_ops(self, each: int = 1, timeout: float = 60) -> None:
        """Until every reader has done `each` more operations (they are all running)."""
        start = dict(self.ops)
        deadline = time.monotonic() + timeout
        names = [t.name for t in self._threads]
        while time.monotonic() < deadline:
            with self._lock:
                if all(self.ops.get(n, 0) - start.get(n, 0) >= each for n in names):
                    return
            if self._stop.wait(0.02):
                return
        raise AssertionError(f"readers stalled: {self.ops} (errors: {self.errors[:5]})")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            self.errors.append(f"readers still blocked after 120 s: {alive}")


def _mmap_child(path: str, seed: str) -> None:
    """The mmap reader's process (see Readers._mmap): reads random chunks through a shared
    mapping until its standard input closes."""
    import json
    import select
    import sys
    digests = json.loads(sys.stdin.readline())
    rng = random.Random(float(seed))
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    while not select.select([sys.stdin], [], [], 0)[0]:
        i = rng.randrange(len(digests))
        t = time.monotonic()
        data = m[i * CHUNK:(i + 1) * CHUNK]
        took = time.monotonic() - t
        if hashlib.sha256(data).hexdigest() != digests[i]:
            print(f"err {path} chunk {i}: wrong bytes through mmap", flush=True)
        else:
            print(f"ok {took:.6f}", flush=True)
        m.madvise(mmap.MADV_DONTNEED, i * CHUNK, len(data))
        os.posix_fadvise(fd, i * CHUNK, CHUNK, os.POSIX_FADV_DONTNEED)


if __name__ == "__main__":
    import sys
    _mmap_child(sys.argv[1], sys.argv[2])
