"""Running the imgvol binary from tests, and assertions on its output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
PULL_FLAGS_COMMANDS = ("pull", "unpack")


@dataclass
class Result:
    cmd: List[str]
    rc: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def __iter__(self):                      # rc, out, err = run(...)
        return iter((self.rc, self.stdout, self.stderr))

    def describe(self) -> str:
        return (f"$ {' '.join(self.cmd)}\nexit code: {self.rc}"
                f"{' (TIMED OUT)' if self.timed_out else ''}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def error_lines(self) -> List[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("Error:")]


def run(cmd: Sequence[str], timeout: float = 120, env: Optional[Dict[str, str]] = None,
        input: Optional[str] = None, cwd: Optional[str] = None) -> Result:
    """Run a command with a hard timeout; never raises on failure."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd, start_new_session=True, errors="replace")
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
        return Result(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return Result(cmd, -9, out, err, timed_out=True)


class Imgvol:
    """The CLI under test, bound to one --root and one clean environment."""

    def __init__(self, binary: str, root: str, env: Dict[str, str], timeout: float = 120):
        self.binary = binary
        self.root = root
        self.env = env
        self.timeout = timeout

    def argv(self, *args, root: Optional[str] = "default") -> List[str]:
        args = [str(a) for a in args]
        if root == "default":
            root = self.root
        if root is not None and args and not args[0].startswith("-"):
            args = [args[0], "--root", root] + args[1:]
        return [self.binary] + args

    def run(self, *args, root: Optional[str] = "default", timeout: Optional[float] = None,
            env: Optional[Dict[str, str]] = None, extra_env: Optional[Dict[str, str]] = None,
            input: Optional[str] = None) -> Result:
        e = dict(self.env if env is None else env)
        if extra_env:
            e.update(extra_env)
        return run(self.argv(*args, root=root), timeout or self.timeout, e, input)

    def popen(self, *args, extra_env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        e = dict(self.env)
        if extra_env:
            e.update(extra_env)
        return subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=e, start_new_session=True)

    # -- convenience, asserting success --------------------------------------------------
    def ok(self, *args, **kw) -> Result:
        res = self.run(*args, **kw)
        assert res.rc == 0, res.describe()
        return res

    def pull(self, ref: str, *flags, insecure: bool = True, **kw) -> str:
        """Pull and return the digest printed on stdout's last line."""
        extra = ["--tls-verify=false"] if insecure else []
        res = self.ok("pull", ref, *extra, *flags, **kw)
        digest = res.last_line
        assert DIGEST_RE.match(digest), f"last stdout line is not a digest:\n{res.describe()}"
        return digest

    def unpack(self, ref: str, dest: str, *flags, insecure: bool = True, **kw) -> Result:
        extra = ["--tls-verify=false"] if insecure else []
        return self.ok("unpack", ref, str(dest), *extra, *flags, **kw)

    def images(self) -> List[dict]:
        res = self.ok("images", "--format", "json")
        try:
            data = json.loads(res.stdout)
        except ValueError as e:
            raise AssertionError(f"images --format json is not JSON ({e}):\n{res.describe()}")
        assert isinstance(data, list), res.describe()
        return data

    def image(self, reference: str) -> Optional[dict]:
        for im in self.images():
            if im.get("reference") == reference:
                return im
        return None

    def inspect(self, ref: str) -> dict:
        res = self.ok("inspect", ref)
        try:
            return json.loads(res.stdout)
        except ValueError as e:
            raise AssertionError(f"inspect output is not JSON ({e}):\n{res.describe()}")

    def prune_json(self) -> int:
        res = self.ok("prune", "--format", "json")
        try:
            data = json.loads(res.stdout)
        except ValueError as e:
            raise AssertionError(f"prune --format json is not JSON ({e}):\n{res.describe()}")
        assert isinstance(data.get("freedBytes"), int), res.describe()
        return data["freedBytes"]


def assert_error(res: Result, *needles: str, single_line: bool = False,
                 ignore_case: bool = False) -> None:
    """The command failed, stderr has an 'Error:' line, and mentions every needle."""
    assert res.rc != 0, f"expected failure\n{res.describe()}"
    assert not res.timed_out, res.describe()
    assert res.rc > 0, f"expected a clean non-zero exit, not a signal/crash\n{res.describe()}"
    assert res.error_lines(), f"no stderr line starts with 'Error:'\n{res.describe()}"
    hay = res.stderr.lower() if ignore_case else res.stderr
    for n in needles:
        assert (n.lower() if ignore_case else n) in hay, \
            f"stderr does not mention {n!r}\n{res.describe()}"
    if single_line:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected exactly one stderr line\n{res.describe()}"
    assert not DIGEST_RE.match(res.last_line or "-"), \
        f"a failed command printed a digest on stdout\n{res.describe()}"


def pull_then_unpack(imgvol: Imgvol, ref: str, dest, *flags: str) -> Result:
    """Pull, and if that worked unpack with --pull never.  Returns the first failing
    result, else the unpack result.  (`res.cmd[1]` tells which step it was.)"""
    res = imgvol.run("pull", ref, "--tls-verify=false", *flags)
    if res.rc != 0:
        return res
    return imgvol.run("unpack", ref, str(dest), "--pull", "never", *flags)


def parse_rfc3339(s: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
