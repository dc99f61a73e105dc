"""CLI surface: --help, reference parsing errors, --root / IMGVOL_ROOT, unknown images."""

import pytest

from support.cli import DIGEST_RE, assert_error
from support.images import small_layers

COMMANDS = ["pull", "images", "inspect", "rm", "prune", "unpack"]
PULL_FLAGS = ["--platform", "--tls-verify", "--creds", "--authfile", "--registries-conf",
              "--quiet"]


def test_top_level_help_lists_commands(imgvol):
    res = imgvol.run("--help", root=None)
    assert res.rc == 0, res.describe()
    text = res.stdout + res.stderr
    for cmd in COMMANDS:
        assert cmd in text, f"--help does not list {cmd}\n{res.describe()}"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_help(imgvol, cmd):
    res = imgvol.run(cmd, "--help", root=None)
    assert res.rc == 0, res.describe()
    text = res.stdout + res.stderr
    assert "--root" in text, f"{cmd} --help does not show --root\n{res.describe()}"
    if cmd in ("pull", "unpack"):
        for flag in PULL_FLAGS:
            assert flag in text, f"{cmd} --help does not show {flag}\n{res.describe()}"
    if cmd == "unpack":
        assert "--pull" in text, res.describe()
    if cmd in ("images", "prune"):
        assert "--format" in text, res.describe()


@pytest.mark.parametrize("ref", [
    "UPPER/Case",
    "a:b:c",
    "127.0.0.1:5000/repo@sha256:1234",                         # digest too short
    "127.0.0.1:5000/repo@sha256:" + "g" * 64,                  # not hex
    "127.0.0.1:5000/repo@md5:" + "0" * 32,                     # unsupported algorithm
    "127.0.0.1:5000/repo:bad tag",
    "127.0.0.1:5000/-repo:latest",
    "127.0.0.1:5000//double-slash",
])
def test_invalid_reference_is_one_clear_error(imgvol, ref):
    res = imgvol.run("pull", ref, "--tls-verify=false", timeout=30)
    assert_error(res, single_line=True)
    assert ref in res.stderr or ref.split("@")[0] in res.stderr, \
        f"the error should quote the reference\n{res.describe()}"
    assert imgvol.images() == []


@pytest.mark.parametrize("cmd", ["inspect", "rm"])
def test_unknown_image(imgvol, registry, cmd):
    ref = f"{registry.host}/never/pulled:v1"
    res = imgvol.run(cmd, ref, timeout=30)
    assert_error(res)
    assert "never/pulled" in res.stderr, res.describe()


def test_unpack_pull_never_uncached(imgvol, registry, publish, tmp_path):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    dest = tmp_path / "out"
    res = imgvol.run("unpack", info.ref, dest, "--pull", "never", "--tls-verify=false")
    assert_error(res)
    assert "e2e/small" in res.stderr, res.describe()
    assert not dest.exists() or not any(dest.iterdir())


def test_images_empty_root(imgvol):
    assert imgvol.images() == []


def test_root_from_environment(imgvol, registry, publish, tmp_path):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    env_root = tmp_path / "envroot"
    env_root.mkdir()
    res = imgvol.run("pull", info.ref, "--tls-verify=false", root=None,
                     extra_env={"IMGVOL_ROOT": str(env_root)})
    assert res.rc == 0, res.describe()
    assert res.last_line == info.manifest_digest
    assert imgvol.images() == [], "pull with IMGVOL_ROOT must not write to the fixture root"
    listed = imgvol.run("images", "--format", "json", root=str(env_root))
    assert listed.rc == 0 and info.manifest_digest in listed.stdout, listed.describe()
    # --root wins over IMGVOL_ROOT
    other = tmp_path / "other"
    other.mkdir()
    res = imgvol.run("images", "--format", "json", root=str(other),
                     extra_env={"IMGVOL_ROOT": str(env_root)})
    assert res.rc == 0 and info.manifest_digest not in res.stdout, res.describe()


def test_pull_unreachable_registry(imgvol):
    from support.registry import free_port
    host = f"127.0.0.1:{free_port()}"
    res = imgvol.run("pull", f"{host}/nothing/here:v1", "--tls-verify=false", timeout=60)
    assert_error(res, host)


def test_pull_unknown_tag_and_repo(imgvol, registry, publish):
    publish.image(registry.host, "e2e/small", "v1", small_layers())
    res = imgvol.run("pull", f"{registry.host}/e2e/small:nope", "--tls-verify=false")
    assert_error(res, "e2e/small")
    res = imgvol.run("pull", f"{registry.host}/e2e/missing:v1", "--tls-verify=false")
    assert_error(res, "e2e/missing")
    assert imgvol.images() == []


def test_quiet_pull_prints_only_digest(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    res = imgvol.run("pull", "-q", info.ref, "--tls-verify=false")
    assert res.rc == 0, res.describe()
    assert res.stdout.strip() == info.manifest_digest, res.describe()
    res = imgvol.run("pull", "--quiet", info.ref, "--tls-verify=false")
    assert res.rc == 0 and res.stdout.strip() == info.manifest_digest, res.describe()
    assert DIGEST_RE.match(res.stdout.strip())


def test_plain_http_needs_tls_verify_false(imgvol, registry, publish):
    """The loopback registries speak plain HTTP: without --tls-verify=false imgvol must
    insist on TLS and fail clearly (naming the registry)."""
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    res = imgvol.run("pull", info.ref, timeout=60)
    assert_error(res, registry.host)
    assert imgvol.images() == []


def test_no_progress_noise_without_tty(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    res = imgvol.ok("pull", info.ref, "--tls-verify=false")
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr, \
        f"progress output without a TTY\n{res.describe()}"
    assert res.stdout.strip().splitlines()[-1] == info.manifest_digest


def test_progress_on_tty_keeps_stdout_clean(imgvol, registry, publish):
    """stderr on a terminal (progress allowed there), stdout a pipe: the digest is still
    the last stdout line and nothing else lands on stdout but plain lines."""
    import os
    import pty
    import select
    import subprocess
    import time

    from support.images import big_layers
    info = publish.image(registry.host, "e2e/tty", "v1", big_layers(1 << 20))
    master, slave = pty.openpty()
    proc = subprocess.Popen(imgvol.argv("pull", info.ref, "--tls-verify=false"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env=imgvol.env, start_new_session=True)
    os.close(slave)
    tty_out = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                tty_out += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout={out!r}\ntty={tty_out[-2000:]!r}"
    lines = out.decode().strip().splitlines()
    assert lines and lines[-1] == info.manifest_digest, out
    assert b"\r" not in out and b"\x1b[" not in out, f"progress leaked to stdout: {out!r}"
