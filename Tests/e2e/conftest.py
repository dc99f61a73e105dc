"""Fixtures for imgvol's end-to-end tests.

The binary comes from $IMGVOL_BIN, else <repo>/.build/debug/imgvol.  Every test gets
its own --root, HOME and XDG_RUNTIME_DIR (so no auth.json or config of the machine
leaks in), and registries/proxies that are stopped in teardown, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from support import oci_layout
from support.cli import Imgvol, run as _run
from support.proxy import Proxy
from support.registry import Registry, clean_env, push_index, push_layout

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".build" / "debug" / "imgvol"

# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def imgvol_bin(tmp_path_factory) -> str:
    """The binary under test, copied once per session so a `swift build` relinking
    .build/debug/imgvol mid-run cannot fail tests with ETXTBSY or mix two builds
    (IMGVOL_BIN_NO_COPY=1 uses it in place)."""
    path = os.environ.get("IMGVOL_BIN") or str(DEFAULT_BIN)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"imgvol binary not found at {path}: run `swift build` in {REPO} "
                    f"or set IMGVOL_BIN=/path/to/imgvol", pytrace=False)
    if os.environ.get("IMGVOL_BIN_NO_COPY"):
        return path
    copy = tmp_path_factory.mktemp("bin") / "imgvol"
    for _ in range(20):                      # a link in progress: wait for it to settle
        try:
            shutil.copy2(path, copy)
            break
        except OSError:
            time.sleep(0.5)
    return str(copy)


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    (h / "run").mkdir(parents=True)
    return h


@pytest.fixture
def base_env(home) -> dict:
    """Environment for imgvol: no proxies, no IMGVOL_ROOT/REGISTRY_AUTH_FILE, private HOME."""
    env = clean_env()
    for k in ("IMGVOL_ROOT", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "CONTAINERS_REGISTRIES_CONF",
              "CONTAINERS_AUTH_FILE"):
        env.pop(k, None)
    env["HOME"] = str(home)
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.setdefault("LANG", "C.UTF-8")
    conf = home / "registries.conf"          # hermetic: not /etc/containers/registries.conf
    conf.write_text("# empty: no mirrors, no rewrites\n")
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    return env


@pytest.fixture
def root(tmp_path) -> Path:
    """A fresh imgvol --root for this test."""
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def imgvol(imgvol_bin, root, base_env) -> Imgvol:
    return Imgvol(imgvol_bin, str(root), base_env)


@pytest.fixture
def run(base_env) -> Callable:
    """run(cmd, timeout=120, env=None) -> Result(rc, stdout, stderr), never raises."""
    def _r(cmd, timeout: float = 120, env: Optional[dict] = None, input: Optional[str] = None):
        return _run(cmd, timeout=timeout, env=env if env is not None else base_env, input=input)
    return _r


# -- registries -------------------------------------------------------------------------

@pytest.fixture
def make_registry(tmp_path) -> Callable[..., Registry]:
    started: List[Registry] = []

    def _make(**kw) -> Registry:
        kw.setdefault("tmpdir", str(tmp_path))
        reg = Registry(**kw)
        started.append(reg)
        return reg.start()

    yield _make
    for reg in reversed(started):
        reg.stop()


@pytest.fixture
def registry(make_registry) -> Registry:
    """Anonymous read/write registry."""
    return make_registry()


@pytest.fixture
def auth_registry(make_registry) -> Registry:
    """htpasswd (Basic) registry; user alice / secret."""
    return make_registry(auth="htpasswd", users={"alice": "secret"})


@pytest.fixture
def token_registry(make_registry) -> Registry:
    """Bearer-token registry; user alice / secret; anonymous refused."""
    return make_registry(auth="token", users={"alice": "secret"}, anonymous_pull=False)


@pytest.fixture
def make_proxy() -> Callable[..., Proxy]:
    started: List[Proxy] = []

    def _make(upstream: str, **kw) -> Proxy:
        px = Proxy(upstream, **kw)
        started.append(px)
        return px.start()

    yield _make
    for px in reversed(started):
        px.stop()


# -- images -------------------------------------------------------------------------------

class Publisher:
    """Writes images into OCI layouts under tmp and pushes them to a registry."""

    def __init__(self, base: Path):
        self.base = base
        self.n = 0

    def layout(self) -> str:
        self.n += 1
        return str(self.base / f"layout{self.n}")

    def image(self, reg_host: str, repo: str, tag: str, layers, creds: Optional[str] = None,
              layout: Optional[str] = None, **kw) -> oci_layout.ImageInfo:
        layout = layout or self.layout()
        info = oci_layout.write_image(layout, tag, layers, **kw)
        pushed = push_layout(layout, tag, reg_host, repo, tag, creds=creds)
        assert pushed == info.manifest_digest, (pushed, info.manifest_digest)
        info.layout = layout
        info.ref = f"{reg_host}/{repo}:{tag}"
        return info

    def index(self, reg_host: str, repo: str, tag: str, platforms, creds: Optional[str] = None,
              docker: bool = False) -> oci_layout.IndexInfo:
        layout = self.layout()
        info = oci_layout.write_index(layout, tag, platforms, docker=docker)
        pushed = push_index(layout, tag, reg_host, repo, tag, creds=creds)
        assert pushed == info.index_digest, (pushed, info.index_digest)
        info.layout = layout
        info.ref = f"{reg_host}/{repo}:{tag}"
        return info


@pytest.fixture
def publish(tmp_path) -> Publisher:
    d = tmp_path / "layouts"
    d.mkdir()
    return Publisher(d)


@pytest.fixture(scope="session")
def umoci() -> str:
    path = shutil.which("umoci")
    if not path:
        pytest.fail("umoci not installed: hack/test installs it (apt-get install umoci)")
    return path


def umoci_unpack(layout: str, tag: str, bundle: str) -> str:
    """umoci unpack LAYOUT:TAG BUNDLE; returns BUNDLE/rootfs."""
    res = _run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle], timeout=120)
    assert res.rc == 0, res.describe()
    return os.path.join(bundle, "rootfs")


# -- mounts and containers -----------------------------------------------------------------

@pytest.fixture
def mounter(imgvol, tmp_path):
    """support.mounts.Mounter bound to this test's imgvol: `mount_ok(ref)` etc.  Teardown,
    pass or fail: `imgvol unmount --force`, then `umount -l`, then SIGKILL of the servers."""
    from support.mounts import Mounter
    m = Mounter(imgvol, tmp_path)
    yield m
    m.cleanup()


@pytest.fixture(scope="session")
def podman_session():
    """podman with private storage (support.podman.Podman) and the busybox image
    localhost/imgvol-busybox:test; everything is removed at the end of the session."""
    from support import podman as pm_mod
    why = pm_mod.available()
    if why:
        pytest.fail(f"podman cannot run containers here: {why}")
    env = clean_env()
    env.setdefault("LANG", "C.UTF-8")
    # A short path: with podman's tmp/run dirs deep under pytest's basetemp, every
    # attached `podman run` waits 20 s for conmon (socket path length limits).
    import tempfile
    workdir = tempfile.mkdtemp(prefix="imgvol-pm-", dir="/tmp")
    pm = pm_mod.Podman.create(workdir, env)
    try:
        pm.import_busybox()
        yield pm
    finally:
        pm.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def podman(podman_session):
    """The session's podman; containers a test made are removed after it."""
    yield podman_session
    podman_session.remove_containers()


def make_base_env(home: Path) -> dict:
    """What `base_env` builds, for fixtures wider than one test (module/session scope)."""
    (home / "run").mkdir(parents=True, exist_ok=True)
    env = clean_env()
    for k in ("IMGVOL_ROOT", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "CONTAINERS_REGISTRIES_CONF",
              "CONTAINERS_AUTH_FILE"):
        env.pop(k, None)
    env["HOME"] = str(home)
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.setdefault("LANG", "C.UTF-8")
    conf = home / "registries.conf"
    conf.write_text("# empty: no mirrors, no rewrites\n")
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    return env
