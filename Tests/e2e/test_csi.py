"""`imgvol csi`, the Kubernetes CSI node plugin, driven the way kubelet drives it.

The kubelet side is a gRPC client generated at test time (grpc_tools.protoc) from the
*official* CSI v1.12.0 csi.proto in shared/reference/ beside the repo, so the plugin is
checked against the spec's wire format, not against its own copy of the proto.

Everything is real: a docker-registry on 127.0.0.1 (plain HTTP, so every request carries
volume_context tlsVerify=false), FUSE mounts, the plugin as a subprocess in its own
session.  Teardown, pass or fail: NodeUnpublishVolume of what a test published,
`imgvol unmount --force`, `umount -l`, SIGKILL of the plugin's process group and of any
`imgvol` process still naming the plugin's --root.

Contract under test (see deploy/kubernetes/README.md):
  imgvol csi --endpoint unix:///PATH --node-id NAME --root DIR
             [--metrics-address 127.0.0.1:PORT] [--driver-name NAME]
"""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import Publisher, make_base_env
from support import oci_layout
from support.cli import Imgvol, run as _run
from support.damage import flip
from support.images import T0, big_layers, pseudo_random, small_layers
from support.mounts import (FSTYPE, cmdline, is_mounted, kill_mount_processes, lazy_umount, mount_entries,
                            mount_entry, models_entries, pid_alive, pids_mentioning, proc_mounts,
                            readdir, read_tree_digests, subtree, wait_until)
from support.oci_layout import Dir, File, Layer, Platform
from support.registry import Registry, free_port
from support.tree import assert_trees_equal, expected_tree, walk

try:
    import grpc
    import grpc_tools
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover - reported as a failure by the fixture
    grpc = None
    _IMPORT_ERROR: Optional[ImportError] = e
else:
    _IMPORT_ERROR = None

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_PROTO = REPO.parent / "shared" / "reference" / "csi-spec-v1.12.0" / "csi.proto"
DRIVER = "csi.imgvol.dev"
NODE_ID = "node-e2e-1"
KUBELET_TIMEOUT = 120      # generous: a cold pull of a small image on a loaded CI box
RESTORE_BUDGET = 5.0       # reads must work again this long after the restarted plugin is up

# --------------------------------------------------------------------------------------
# The kubelet-side gRPC client, compiled from the official proto
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def csi(tmp_path_factory):
    """The generated module pair: returns a namespace with pb (messages) and rpc (stubs)."""
    if _IMPORT_ERROR is not None:
        pytest.fail(f"grpcio and grpcio-tools are needed ({_IMPORT_ERROR}): "
                    f"python3 -m pip install -r Tests/e2e/requirements.txt", pytrace=False)
    if not OFFICIAL_PROTO.is_file():
        pytest.fail(f"official CSI v1.12.0 proto not found at {OFFICIAL_PROTO}", pytrace=False)
    out = tmp_path_factory.mktemp("csi-gen")
    shutil.copy(OFFICIAL_PROTO, out / "csi.proto")
    wkt = Path(grpc_tools.__file__).parent / "_proto"      # google/protobuf/*.proto
    rc = protoc.main(["grpc_tools.protoc", f"-I{out}", f"-I{wkt}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(out / "csi.proto")])
    assert rc == 0, f"protoc failed on {OFFICIAL_PROTO} (rc={rc})"
    sys.path.insert(0, str(out))
    try:
        pb = importlib.import_module("csi_pb2")
        rpc = importlib.import_module("csi_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    assert pb.DESCRIPTOR.package == "csi.v1"

    class NS:
        pass
    ns = NS()
    ns.pb, ns.rpc = pb, rpc
    return ns


# --------------------------------------------------------------------------------------
# The plugin process
# --------------------------------------------------------------------------------------


def hermetic_env(home: Path) -> Dict[str, str]:
    """No proxies, no IMGVOL_ROOT or auth files of this machine, empty registries.conf."""

    env = make_base_env(home)
    conf = home / "registries.conf"
    conf.write_text("# empty: no mirrors, no rewrites\n")
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    return env


@pytest.fixture(scope="session")
def csi_bin(imgvol_bin) -> str:
    """The binary, once `imgvol csi --help` works (it fails before the plugin exists)."""
    r = _run([imgvol_bin, "csi", "--help"], timeout=30)
    if r.rc != 0 or "--endpoint" not in r.stdout + r.stderr:
        pytest.fail(f"`imgvol csi` is not available in {imgvol_bin}:\n{r.describe()}",
                    pytrace=False)
    return imgvol_bin


class Plugin:
    """One `imgvol csi` process (own session) plus a channel and stubs to it."""

    def __init__(self, binary: str, csi, base: Path, node_id: str = NODE_ID,
                 driver_name: Optional[str] = None, metrics: bool = True):
        self.binary, self.csi, self.base = binary, csi, Path(base)
        self.node_id, self.driver_name = node_id, driver_name
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        # AF_UNIX paths are limited to 108 bytes: keep the socket in a short private dir.
        self.sockdir = Path(tempfile.mkdtemp(prefix="imgvol-csi-", dir="/tmp"))
        self.socket = self.sockdir / "csi.sock"
        self.endpoint = f"unix://{self.socket}"
        self.metrics_port = free_port() if metrics else None
        home = self.base / "home"
        self.env = hermetic_env(home)
        self.imgvol = Imgvol(binary, str(self.root), self.env)
        self.proc: Optional[subprocess.Popen] = None
        self.logs: List[Path] = []
        self.channel = None
        self.identity = self.node = None
        self.published: List[Tuple[str, str]] = []      # (volume_id, target) for cleanup
        self.targets: List[str] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def argv(self) -> List[str]:
        a = [self.binary, "csi", "--endpoint", self.endpoint, "--node-id", self.node_id,
             "--root", str(self.root), "--log-level", "debug"]
        if self.metrics_port:
            a += ["--metrics-address", f"127.0.0.1:{self.metrics_port}"]
        if self.driver_name:
            a += ["--driver-name", self.driver_name]
        return a

    def start(self, wait: float = 30) -> "Plugin":
        log = self.base / f"plugin-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        self.pgid = self.proc.pid
        self._connect()
        deadline = time.monotonic() + wait
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"imgvol csi exited with {self.proc.returncode} at "
                                     f"start\n{self.log_tail()}")
            try:
                self.identity.Probe(self.csi.pb.ProbeRequest(), timeout=2)
                return self
            except grpc.RpcError as e:
                last = e
                time.sleep(0.1)
        raise AssertionError(f"imgvol csi did not answer Probe within {wait}s (last: "
                             f"{last})\n{self.log_tail()}")

    def _connect(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = grpc.insecure_channel(self.endpoint)
        self.identity = self.csi.rpc.IdentityStub(self.channel)
        self.node = self.csi.rpc.NodeStub(self.channel)

    def killpg(self, sig=signal.SIGKILL) -> None:
        """Signal the plugin's whole process group and reap the leader."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killpg(signal.SIGTERM)
        else:
            self.killpg(signal.SIGKILL)         # stragglers in the group, if any

    def log_tail(self, n: int = 60) -> str:
        out = []
        for p in self.logs:
            try:
                lines = p.read_text(errors="replace").splitlines()
            except OSError:
                continue
            out.append(f"--- {p.name} (last {n} lines) ---")
            out.extend(lines[-n:])
        return "\n".join(out)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    # -- cleanup -----------------------------------------------------------------------------
    def forget(self, volume_id: str, target: str) -> None:
        if (volume_id, target) in self.published:
            self.published.remove((volume_id, target))

    def cleanup_volumes(self) -> None:
        """Unpublish what was published (if the plugin still answers), then force."""
        alive = self.proc is not None and self.proc.poll() is None
        for vid, target in reversed(self.published):
            if alive:
                try:
                    self.node.NodeUnpublishVolume(self.csi.pb.NodeUnpublishVolumeRequest(
                        volume_id=vid, target_path=target), timeout=20)
                except Exception:
                    pass
        for target in reversed(self.targets):
            for _ in range(4):
                e = mount_entry(target)
                if e is None:
                    break
                if e.fstype == FSTYPE:
                    self.imgvol.run("unmount", target, "--force", timeout=30)
                lazy_umount(target)
        self.published.clear()

    def cleanup(self) -> None:
        try:
            self.cleanup_volumes()
        finally:
            self.stop()
            if self.channel is not None:
                self.channel.close()
                self.channel = None
            for e in proc_mounts():           # anything of ours left mounted under base
                if e.fstype == FSTYPE and (e.target + "/").startswith(str(self.base) + "/"):
                    lazy_umount(e.target)
            kill_servers(self.root)
            shutil.rmtree(self.sockdir, ignore_errors=True)


def kill_servers(root) -> None:
    """SIGKILL every imgvol process (FUSE servers) naming this --root, only those."""
    for pid in pids_mentioning(str(root)):
        argv = cmdline(pid)
        if argv and "imgvol" in os.path.basename(argv[0]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Env:
    """A registry, a publisher of images into it, and a running plugin."""

    def __init__(self, base: Path, reg: Registry, plugin: Plugin, csi):

        self.base, self.reg, self.plugin, self.csi = base, reg, plugin, csi
        (base / "layouts").mkdir(exist_ok=True)
        self.publish = Publisher(base / "layouts")
        self.kubelet = base / "kubelet"
        self.kubelet.mkdir(exist_ok=True)
        self._images: Dict[str, oci_layout.ImageInfo] = {}
        self.cleanups: List = []          # callables run after the test, before unpublish

    def run_cleanups(self) -> None:
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception:
                pass

    @property
    def pb(self):
        return self.csi.pb

    # -- images ------------------------------------------------------------------------------
    def image(self, repo: str, tag: str, entries_per_layer, reg: Optional[Registry] = None,
              creds: Optional[str] = None) -> oci_layout.ImageInfo:
        reg = reg or self.reg
        key = f"{reg.host}/{repo}:{tag}"
        if key not in self._images:
            info = self.publish.image(reg.host, repo, tag,
                                      [Layer(e, "gzip") for e in entries_per_layer], creds=creds)
            info.entries = entries_per_layer
            self._images[key] = info
        return self._images[key]

    def models(self) -> oci_layout.ImageInfo:
        return self.image("e2e/models", "v1", models_entries())

    def small(self, tag: str) -> oci_layout.ImageInfo:
        return self.image("e2e/small", tag, [small_layers(tag)[0].entries])

    # -- kubelet-shaped requests -------------------------------------------------------------
    def target(self, name: Optional[str] = None, create: bool = False) -> str:
        """…/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount; kubelet makes the parent,
        the plugin makes `mount` (create=True makes it too, as some COs do)."""
        pod = uuid.uuid4().hex[:12]
        parent = self.kubelet / "pods" / pod / "volumes" / "kubernetes.io~csi" / (name or "vol")
        parent.mkdir(parents=True)
        t = parent / "mount"
        if create:
            t.mkdir()
        self.plugin.targets.append(str(t))
        return str(t)

    def context(self, image: str, **extra) -> Dict[str, str]:
        ctx = {"image": image, "tlsVerify": "false"}
        ctx.update({k: v for k, v in extra.items() if v is not None})
        return ctx

    def inline_request(self, image: str, target: str, volume_id: Optional[str] = None,
                       secrets: Optional[Dict[str, str]] = None, **ctx):
        """What kubelet sends for an inline (ephemeral) csi volume."""
        pb = self.pb
        vid = volume_id if volume_id is not None else \
            "csi-" + hashlib.sha256(target.encode()).hexdigest()
        context = self.context(image, **ctx)
        context.update({"csi.storage.k8s.io/ephemeral": "true",
                        "csi.storage.k8s.io/pod.name": "model-inline",
                        "csi.storage.k8s.io/pod.namespace": "default",
                        "csi.storage.k8s.io/pod.uid": str(uuid.uuid4()),
                        "csi.storage.k8s.io/serviceAccount.name": "default"})
        return pb.NodePublishVolumeRequest(
            volume_id=vid, target_path=target,
            volume_capability=mount_cap(pb, pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER),
            readonly=False, volume_context=context, secrets=secrets or {})

    def pv_request(self, image: str, target: str, volume_id: str,
                   secrets: Optional[Dict[str, str]] = None, **ctx):
        """What kubelet sends for a ReadOnlyMany PersistentVolume."""
        pb = self.pb
        return pb.NodePublishVolumeRequest(
            volume_id=volume_id, target_path=target,
            volume_capability=mount_cap(pb,
                                        pb.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY),
            readonly=True, volume_context=self.context(image, **ctx), secrets=secrets or {})

    # -- calls -------------------------------------------------------------------------------
    def publish_vol(self, req, timeout: float = KUBELET_TIMEOUT):
        """NodePublishVolume that must succeed; the target is then an imgvol ro mount."""
        self.plugin.published.append((req.volume_id, req.target_path))
        try:
            resp = self.plugin.node.NodePublishVolume(req, timeout=timeout)
        except grpc.RpcError as e:
            raise AssertionError(
                f"NodePublishVolume(volume_id={req.volume_id!r}, image="
                f"{req.volume_context.get('image')!r}) failed: {e.code()} {e.details()}\n"
                f"{self.plugin.log_tail()}") from None
        assert_ro_mount(req.target_path)
        return resp

    def publish_err(self, req, timeout: float = KUBELET_TIMEOUT) -> "grpc.RpcError":
        """NodePublishVolume that must fail; returns the error.  Nothing is left mounted."""
        if req.target_path:
            self.plugin.published.append((req.volume_id, req.target_path))
        try:
            self.plugin.node.NodePublishVolume(req, timeout=timeout)
        except grpc.RpcError as e:
            if req.target_path:
                assert not is_mounted(req.target_path), \
                    f"a failed publish ({e.code()}) left a mount at {req.target_path}: " \
                    f"{mount_entry(req.target_path)}"
            return e
        raise AssertionError(f"NodePublishVolume({describe(req)}) succeeded; expected an error")

    def unpublish(self, volume_id: str, target: str, timeout: float = 60):
        try:
            resp = self.plugin.node.NodeUnpublishVolume(
                self.pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target),
                timeout=timeout)
        except grpc.RpcError as e:
            raise AssertionError(f"NodeUnpublishVolume({volume_id!r}, {target}) failed: "
                                 f"{e.code()} {e.details()}\n{self.plugin.log_tail()}") from None
        self.plugin.forget(volume_id, target)
        return resp


def mount_cap(pb, mode, fs_type: str = "", mount_flags=()):
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(mount_flags)),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode))


def describe(req) -> str:
    ctx = {k: v for k, v in req.volume_context.items() if not k.startswith("csi.storage")}
    return (f"volume_id={req.volume_id!r} target={req.target_path!r} readonly={req.readonly} "
            f"ctx={ctx} secrets={sorted(req.secrets)}")


def assert_ro_mount(target: str) -> None:
    es = mount_entries(target)
    assert es, f"{target} is not a mount point after NodePublishVolume returned OK"
    e = es[-1]
    assert e.fstype == FSTYPE, f"{target}: fstype {e.fstype}, expected {FSTYPE}: {e}"
    assert e.has("ro"), f"{target} is not mounted read-only: {e.options}"
    assert len(es) == 1, f"{target}: {len(es)} stacked mounts: {es}"


def assert_code(err, code, rpc: str = "NodePublishVolume", what: str = "") -> None:
    assert err.code() == code, \
        f"{rpc}{' ' + what if what else ''}: expected {code.name}, got {err.code().name}: " \
        f"{err.details()!r}"
    assert err.details(), f"{rpc} {code.name} without a message"


def rpc_error(fn, req, timeout: float = 30):
    try:
        fn(req, timeout=timeout)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"{fn} succeeded; expected an error")


def erofs(fn, *args) -> Optional[int]:
    try:
        r = fn(*args)
        if isinstance(r, int):
            os.close(r)
        return None
    except OSError as e:
        return e.errno


def file_digests(tree) -> Dict[str, str]:
    return {p: n.sha256 for p, n in tree.items() if n.type == "file"}


def expected_files(info) -> Dict[str, str]:
    return file_digests(expected_tree(info.entries))


def check_volume(target: str, info, sub: Optional[str] = None) -> None:
    """The mounted tree is exactly the model of the image (or of its subPath)."""
    want = expected_tree(info.entries)
    if sub:
        want = subtree(want, sub)
    assert_trees_equal(want, walk(target), "image model", "published volume")


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(csi, csi_bin, tmp_path_factory):
    """Module-wide: one registry, one plugin (its root shared by the module's tests)."""
    base = tmp_path_factory.mktemp("csi")
    reg = Registry(tmpdir=str(base)).start()
    plugin = Plugin(csi_bin, csi, base / "plugin")
    try:
        plugin.start()
        yield Env(base, reg, plugin, csi)
    finally:
        plugin.cleanup()
        reg.stop()


@pytest.fixture
def e(env):
    """The module's env; what a test published is unpublished/forced away after it.  If an
    earlier test killed the shared plugin, it is restarted (that test already failed)."""
    if env.plugin.proc.poll() is not None:
        env.plugin.start()
    yield env
    env.run_cleanups()
    env.plugin.cleanup_volumes()
    env.plugin.targets.clear()
    assert env.plugin.proc.poll() is None, \
        f"the plugin died during the test\n{env.plugin.log_tail()}"


@pytest.fixture
def make_plugin(csi, csi_bin, tmp_path):
    """Private plugins (restart/deadline/driver-name tests); all cleaned up after."""
    made: List[Plugin] = []

    def _make(name: str = "p", **kw) -> Plugin:
        p = Plugin(csi_bin, csi, tmp_path / name, **kw)
        made.append(p)
        return p

    yield _make
    for p in reversed(made):
        p.cleanup()


@pytest.fixture
def own_env(make_plugin, make_registry, tmp_path, csi):
    """A function-scoped Env with its own plugin and registry."""
    reg = make_registry()
    plugin = make_plugin("own").start()
    env = Env(tmp_path, reg, plugin, csi)
    yield env
    env.run_cleanups()


# --------------------------------------------------------------------------------------
# Identity and node info
# --------------------------------------------------------------------------------------


def test_identity(env):
    pb, p = env.pb, env.plugin
    info = p.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=10)
    assert info.name == DRIVER
    assert info.vendor_version, "GetPluginInfo.vendor_version should be set"
    caps = p.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=10)
    services = [c.service.type for c in caps.capabilities if c.HasField("service")]
    assert pb.PluginCapability.Service.CONTROLLER_SERVICE not in services, \
        f"a node-only plugin must not advertise CONTROLLER_SERVICE: {caps}"
    probe = p.identity.Probe(pb.ProbeRequest(), timeout=10)
    assert not probe.HasField("ready") or probe.ready.value is True, probe


def test_driver_name_flag(make_plugin, csi):
    p = make_plugin("named", driver_name="images.example.org", metrics=False).start()
    info = p.identity.GetPluginInfo(csi.pb.GetPluginInfoRequest(), timeout=10)
    assert info.name == "images.example.org"


def test_node_info_and_capabilities(env):
    pb, node = env.pb, env.plugin.node
    info = node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=10)
    assert info.node_id == NODE_ID
    assert info.max_volumes_per_node >= 0
    caps = node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest(), timeout=10)
    types = {c.rpc.type for c in caps.capabilities if c.HasField("rpc")}
    T = pb.NodeServiceCapability.RPC
    assert T.GET_VOLUME_STATS in types, caps
    assert T.STAGE_UNSTAGE_VOLUME not in types, \
        f"NodeStage is unimplemented, so STAGE_UNSTAGE_VOLUME must not be advertised: {caps}"


def test_stage_unstage_unimplemented(env):
    pb, node = env.pb, env.plugin.node
    cap = mount_cap(pb, pb.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY)
    err = rpc_error(node.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id="v", staging_target_path=str(env.base / "staging"), volume_capability=cap))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (err.code(), err.details())
    err = rpc_error(node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(
        volume_id="v", staging_target_path=str(env.base / "staging")))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (err.code(), err.details())


# --------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------


def test_inline_volume(e, tmp_path):
    """kubelet's inline volume: SINGLE_NODE_WRITER, readonly=false; mounted read-only."""
    info = e.models()
    target = e.target("model")
    assert not os.path.exists(target)
    req = e.inline_request(info.ref, target, pullPolicy="IfNotPresent")
    e.publish_vol(req)
    st = os.stat(target)
    assert stat.S_ISDIR(st.st_mode)
    check_volume(target, info)
    assert Path(target, "models/latest").read_bytes() == pseudo_random(100 * 1024 + 7, 12)
    # the same bytes `imgvol unpack` gives from the plugin's own store (no pull needed)
    out = tmp_path / "unpacked"
    res = e.plugin.imgvol.run("unpack", info.ref, str(out), "--pull", "never",
                              "--tls-verify=false")
    assert res.rc == 0, f"the plugin's --root does not hold the image:\n{res.describe()}"
    assert_trees_equal(walk(str(out)), walk(target), "imgvol unpack", "published volume")
    # read-only, whatever kubelet asked for
    entry = mount_entry(target)
    assert entry.has("ro") and entry.fstype == FSTYPE, entry
    for what, fn, args in [
            ("create", os.open, (os.path.join(target, "new"), os.O_WRONLY | os.O_CREAT, 0o644)),
            ("write", os.open, (os.path.join(target, "README"), os.O_WRONLY)),
            ("mkdir", os.mkdir, (os.path.join(target, "d"),)),
            ("unlink", os.unlink, (os.path.join(target, "README"),)),
            ("chmod", os.chmod, (os.path.join(target, "README"), 0o777))]:
        assert erofs(fn, *args) == errno.EROFS, f"{what} in the volume should fail with EROFS"


def test_pv_volume_two_pods(e):
    """A ReadOnlyMany PV: MULTI_NODE_READER_ONLY, readonly=true; two pods on one node get
    the same volume_id at two targets (one pre-created, as some COs do)."""
    info = e.models()
    t1, t2 = e.target("pv-a"), e.target("pv-a", create=True)
    e.publish_vol(e.pv_request(info.ref, t1, "minilm-v1"))
    e.publish_vol(e.pv_request(info.ref, t2, "minilm-v1", pullPolicy="Never"))
    for t in (t1, t2):
        check_volume(t, info)
        assert erofs(os.mkdir, os.path.join(t, "x")) == errno.EROFS
    e.unpublish("minilm-v1", t1)
    assert not os.path.exists(t1)
    check_volume(t2, info)                # the other pod's mount is untouched
    e.unpublish("minilm-v1", t2)
    assert not os.path.exists(t2)


def test_publish_is_idempotent_and_unpublish_removes_target(e):
    info = e.small("idem")
    target = e.target("idem")
    req = e.inline_request(info.ref, target)
    e.publish_vol(req)
    e.publish_vol(req)                    # kubelet retries: OK, still exactly one mount
    e.publish_vol(req)
    assert Path(target, "idem.txt").read_text() == "idem\n"
    assert len(mount_entries(target)) == 1
    e.unpublish(req.volume_id, target)
    assert not is_mounted(target), mount_entries(target)
    assert not os.path.exists(target), "NodeUnpublishVolume must remove the target directory"
    assert os.path.isdir(os.path.dirname(target)), "the parent (kubelet's) must stay"
    e.unpublish(req.volume_id, target)    # again: OK
    # no FUSE server is left serving the target
    time.sleep(0.5)
    left = [p for p in pids_mentioning(target) if "imgvol" in (cmdline(p)[:1] or [""])[0]]
    assert not left, f"processes still naming {target}: {[cmdline(p) for p in left]}"


def test_unpublish_unknown_target_is_ok(e):
    target = e.target("never")
    e.unpublish("csi-never-published", target)
    assert not os.path.exists(target)


def test_unpublish_after_external_unmount(e):
    """Someone (an admin, a reboot cleanup) unmounted the target: unpublish still succeeds
    and removes the directory."""
    info = e.small("ext")
    target = e.target("ext")
    req = e.inline_request(info.ref, target)
    e.publish_vol(req)
    e.plugin.imgvol.run("unmount", target, "--force", timeout=30)
    lazy_umount(target)
    assert not is_mounted(target)
    e.unpublish(req.volume_id, target)
    assert not os.path.exists(target)


def test_pull_policies(e):
    """IfNotPresent uses the cached image, Always re-resolves the tag, Never needs the cache."""
    repo, tag = "e2e/policy", "v1"
    old = e.publish.image(e.reg.host, repo, tag, small_layers("old"))
    ref = old.ref
    t1 = e.target("pol")
    e.publish_vol(e.inline_request(ref, t1, pullPolicy="IfNotPresent"))
    assert Path(t1, "old.txt").is_file()
    e.publish.image(e.reg.host, repo, tag, small_layers("new"))        # the tag moves
    t2 = e.target("pol")
    e.publish_vol(e.inline_request(ref, t2, pullPolicy="IfNotPresent"))
    assert Path(t2, "old.txt").is_file(), "IfNotPresent must not pull a cached image again"
    t3 = e.target("pol")
    e.publish_vol(e.inline_request(ref, t3, pullPolicy="Always"))
    assert Path(t3, "new.txt").is_file() and not Path(t3, "old.txt").exists(), \
        "Always must resolve the tag again"
    t4 = e.target("pol")
    e.publish_vol(e.inline_request(ref, t4, pullPolicy="Never"))
    assert Path(t4, "new.txt").is_file(), "Never uses what is cached (now the new image)"
    assert Path(t1, "old.txt").is_file(), "a published volume never changes under a pod"


def test_already_exists_for_a_different_image(e):
    a, b = e.small("alpha"), e.small("beta")
    target = e.target("clash")
    req = e.inline_request(a.ref, target, volume_id="clash-vol")
    e.publish_vol(req)
    other = e.inline_request(b.ref, target, volume_id="clash-vol")
    err = rpc_error(e.plugin.node.NodePublishVolume, other, timeout=KUBELET_TIMEOUT)
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS, what="same volume_id+target, other image")
    assert_ro_mount(target)
    assert Path(target, "alpha.txt").read_text() == "alpha\n", "the first mount must stay"
    assert not Path(target, "beta.txt").exists()
    e.unpublish("clash-vol", target)
    assert not os.path.exists(target)


def test_subpath(e):
    info = e.models()
    for sub in ("models", "models/weights"):
        target = e.target("sub")
        req = e.inline_request(info.ref, target, subPath=sub)
        e.publish_vol(req)
        check_volume(target, info, sub)
        assert not os.path.exists(os.path.join(target, "README"))
        e.unpublish(req.volume_id, target)


def test_platform(e):
    """volume_context platform picks one image of a multi-arch index."""
    plats = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "s390x", None)]
    layout = e.publish.layout()
    from support.registry import push_index
    idx = oci_layout.write_index(layout, "multi", [
        Platform(o, a, v, layers=[Layer([File("arch", f"{o}/{a}/{v}\n", mtime=T0)])])
        for o, a, v in plats])
    assert push_index(layout, "multi", e.reg.host, "e2e/multi", "v1") == idx.index_digest
    ref = f"{e.reg.host}/e2e/multi:v1"
    for spec, want in [("linux/arm64/v8", "linux/arm64/v8"), ("linux/s390x", "linux/s390x/None")]:
        t = e.target("plat")
        req = e.inline_request(ref, t, platform=spec, volume_id=f"plat-{spec}")
        e.publish_vol(req)
        assert Path(t, "arch").read_text() == want + "\n", spec
        e.unpublish(req.volume_id, t)
    err = e.publish_err(e.inline_request(ref, e.target("plat"), platform="linux/mips64le"))
    assert err.code() in (SC.NOT_FOUND, SC.INVALID_ARGUMENT, SC.FAILED_PRECONDITION), \
        f"platform missing from the index: got {err.code().name}: {err.details()!r}"


def test_parallel_publishes(e):
    """8 volumes at once (kubelet publishes concurrently): 4 fresh images, 2 volumes each."""
    infos = []
    for i in range(4):
        entries = [[Dir("data", mtime=T0),
                    File("data/blob.bin", pseudo_random(512 * 1024 + i, 100 + i), mtime=T0),
                    File("id", f"{i}\n", mtime=T0)]]
        infos.append(e.image("e2e/par", f"p{i}", entries))
    reqs = []
    for n in range(8):
        info = infos[n % 4]
        t = e.target(f"par{n}")
        reqs.append((info, e.inline_request(info.ref, t, volume_id=f"par-{n}")))

    errors: List[str] = []

    def one(item):
        info, req = item
        try:
            e.publish_vol(req)
        except AssertionError as ex:
            errors.append(str(ex).splitlines()[0])

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, reqs))
    assert not errors, "parallel publishes failed:\n" + "\n".join(errors) + "\n" + \
        e.plugin.log_tail()
    for info, req in reqs:
        assert read_tree_digests(req.target_path) == expected_files(info), req.target_path
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda r: e.unpublish(r[1].volume_id, r[1].target_path), reqs))
    for _, req in reqs:
        assert not os.path.exists(req.target_path)


# --------------------------------------------------------------------------------------
# Bad input: the exact codes
# --------------------------------------------------------------------------------------

SC = grpc.StatusCode if grpc else None


def _bad_requests(e):
    """(name, request, expected code)."""
    pb = e.pb
    info = e.models()
    ok = e.inline_request(info.ref, e.target("bad"))
    cases = []

    def case(name, code, mutate):
        req = pb.NodePublishVolumeRequest()
        req.CopyFrom(ok)
        req.target_path = e.target("bad")
        mutate(req)
        cases.append((name, req, code))

    case("no volume_id", SC.INVALID_ARGUMENT, lambda r: r.ClearField("volume_id"))
    case("no target_path", SC.INVALID_ARGUMENT, lambda r: r.ClearField("target_path"))
    case("no volume_capability", SC.INVALID_ARGUMENT,
         lambda r: r.ClearField("volume_capability"))
    case("no image", SC.INVALID_ARGUMENT, lambda r: r.volume_context.pop("image"))
    case("empty image", SC.INVALID_ARGUMENT, lambda r: r.volume_context.update(image=""))

    def block(r):
        r.volume_capability.ClearField("mount")
        r.volume_capability.block.SetInParent()
    case("block capability", SC.INVALID_ARGUMENT, block)
    case("invalid reference", SC.INVALID_ARGUMENT,
         lambda r: r.volume_context.update(image="Not A/Valid::Ref!"))
    case("invalid pullPolicy", SC.INVALID_ARGUMENT,
         lambda r: r.volume_context.update(pullPolicy="Sometimes"))
    case("invalid lazy", SC.INVALID_ARGUMENT, lambda r: r.volume_context.update(lazy="maybe"))
    case("lazy, pullPolicy Never, not cached", SC.FAILED_PRECONDITION,
         lambda r: r.volume_context.update(image=f"{e.reg.host}/e2e/uncached-lazy:v1",
                                           pullPolicy="Never", lazy="true"))
    case("repository not in registry", SC.NOT_FOUND,
         lambda r: r.volume_context.update(image=f"{e.reg.host}/e2e/nope:v1"))
    case("tag not in registry", SC.NOT_FOUND,
         lambda r: r.volume_context.update(image=f"{e.reg.host}/e2e/models:nope"))
    case("pullPolicy Never, not cached", SC.FAILED_PRECONDITION,
         lambda r: r.volume_context.update(image=f"{e.reg.host}/e2e/uncached:v1",
                                           pullPolicy="Never"))
    for sub in ("..", "../..", "models/../..", "models/../../etc"):
        case(f"subPath {sub!r} escapes", SC.INVALID_ARGUMENT,
             lambda r, s=sub: r.volume_context.update(subPath=s))
    case("subPath missing", SC.NOT_FOUND, lambda r: r.volume_context.update(subPath="nope"))
    case("subPath missing below", SC.NOT_FOUND,
         lambda r: r.volume_context.update(subPath="models/nope"))
    return info, cases


def test_bad_publish_requests(e):
    info, cases = _bad_requests(e)
    # the image must be cached already for "Never" to be about *this* ref only
    e.image("e2e/uncached", "v1", [small_layers("u")[0].entries])
    failures = []
    for name, req, code in cases:
        try:
            err = e.publish_err(req)
        except AssertionError as ex:
            failures.append(f"{name}: {ex}".splitlines()[0])
            continue
        if err.code() != code:
            failures.append(f"{name}: expected {code.name}, got {err.code().name}: "
                            f"{err.details()!r}")
        elif not err.details():
            failures.append(f"{name}: {code.name} without a message")
        if req.target_path and os.path.exists(req.target_path) and os.listdir(req.target_path):
            failures.append(f"{name}: target left non-empty: {os.listdir(req.target_path)}")
    assert not failures, "NodePublishVolume with bad input:\n  " + "\n  ".join(failures)


def _lazy_image(e: Env, repo: str, reg: Optional[Registry] = None, creds: Optional[str] = None):
    """An uncompressed image (a lazy mount reads its tar headers and files with ranges)."""
    reg = reg or e.reg
    entries = [Dir("weights", mtime=T0), File("weights/w.bin", pseudo_random(9 << 20, 31), mtime=T0),
               File("README", "lazy\n", mtime=T0)]
    return e.publish.image(reg.host, repo, "v1", [Layer(entries, "none")], creds=creds)


def _wait_cached(imgvol: Imgvol, digest: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(i.get("digest") == digest for i in imgvol.images()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{digest} was not recorded in the plugin's store within {timeout}s")


def test_lazy_volume(e):
    """volume attribute lazy: "true": published before the image is pulled; the log names the
    digest the volume serves; once every blob is verified the image is in the store."""
    info = _lazy_image(e, "e2e/lazy-csi")
    target = e.target("lazy")
    req = e.inline_request(info.ref, target, lazy="true")
    e.publish_vol(req)
    assert Path(target, "README").read_text() == "lazy\n"
    assert Path(target, "weights/w.bin").read_bytes() == pseudo_random(9 << 20, 31)
    assert info.manifest_digest in e.plugin.log_text(), e.plugin.log_tail()
    _wait_cached(e.plugin.imgvol, info.manifest_digest)
    e.publish_vol(req)                    # idempotent, as for a full pull
    e.unpublish(req.volume_id, target)
    assert not os.path.exists(target)


def test_lazy_volume_with_secrets(auth_env):
    """Credentials reach a lazy mount's server through a pipe: never on its command line,
    never in the plugin's log."""
    e, reg = auth_env
    info = _lazy_image(e, "e2e/lazy-private", reg=reg, creds=reg.creds)
    target = e.target("lazy-private")
    req = e.inline_request(info.ref, target, lazy="true",
                           secrets={"username": "alice", "password": "secret"})
    e.publish_vol(req)
    assert Path(target, "weights/w.bin").read_bytes() == pseudo_random(9 << 20, 31)
    servers = [p for p in pids_mentioning(target)]
    assert servers, "no mount server found for the lazy volume"
    for pid in servers:
        argv = cmdline(pid)
        assert "--creds" not in argv and not any("alice:secret" in arg for arg in argv), argv
    assert "alice:secret" not in e.plugin.log_text()
    e.unpublish(req.volume_id, target)


def test_bad_unpublish_and_stats_requests(e):
    pb, node = e.pb, e.plugin.node
    t = e.target("x")
    for name, req in [("no volume_id", pb.NodeUnpublishVolumeRequest(target_path=t)),
                      ("no target_path", pb.NodeUnpublishVolumeRequest(volume_id="v"))]:
        assert_code(rpc_error(node.NodeUnpublishVolume, req), SC.INVALID_ARGUMENT,
                    "NodeUnpublishVolume", name)
    for name, req in [("no volume_id", pb.NodeGetVolumeStatsRequest(volume_path=t)),
                      ("no volume_path", pb.NodeGetVolumeStatsRequest(volume_id="v"))]:
        assert_code(rpc_error(node.NodeGetVolumeStats, req), SC.INVALID_ARGUMENT,
                    "NodeGetVolumeStats", name)
    err = rpc_error(node.NodeGetVolumeStats,
                    pb.NodeGetVolumeStatsRequest(volume_id="nope", volume_path=t))
    assert_code(err, SC.NOT_FOUND, "NodeGetVolumeStats", "unknown volume")


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------


@pytest.fixture
def auth_env(e, auth_registry):
    return e, auth_registry


def _dockerconfigjson(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


def test_secrets(auth_env):
    e, reg = auth_env
    imgs = {name: e.image("e2e/private", name, [small_layers(name)[0].entries], reg=reg,
                          creds=reg.creds)
            for name in ("dcj", "userpass", "wrong", "anon")}

    # .dockerconfigjson (kubernetes.io/dockerconfigjson Secret)
    t = e.target("dcj")
    req = e.inline_request(imgs["dcj"].ref, t, secrets={
        ".dockerconfigjson": _dockerconfigjson(reg.host, "alice", "secret")})
    e.publish_vol(req)
    assert Path(t, "dcj.txt").read_text() == "dcj\n"

    # username / password
    t = e.target("userpass")
    req = e.pv_request(imgs["userpass"].ref, t, "private-pv",
                       secrets={"username": "alice", "password": "secret"})
    e.publish_vol(req)
    assert Path(t, "userpass.txt").read_text() == "userpass\n"

    # wrong password, then none at all: errors, no mount, password never echoed
    bad = "wrong-Pa55-xyzzy"
    for name, secrets in [("wrong password", {"username": "alice", "password": bad}),
                          ("wrong password in .dockerconfigjson",
                           {".dockerconfigjson": _dockerconfigjson(reg.host, "alice", bad)}),
                          ("no credentials", {})]:
        img = imgs["wrong"] if secrets else imgs["anon"]
        err = e.publish_err(e.inline_request(img.ref, e.target("bad"), secrets=secrets))
        assert err.code() in (SC.UNAUTHENTICATED, SC.PERMISSION_DENIED), \
            f"{name}: expected UNAUTHENTICATED or PERMISSION_DENIED, got {err.code().name}: " \
            f"{err.details()!r}"
        assert bad not in (err.details() or ""), f"{name}: the error echoes the password"
    log = e.plugin.log_text()
    for leak in (bad, base64.b64encode(f"alice:{bad}".encode()).decode(), "alice:secret",
                 base64.b64encode(b"alice:secret").decode()):
        assert leak not in log, f"the plugin logged a credential ({leak!r})"


def test_secrets_bearer_token_registry(e, token_registry):
    reg = token_registry
    info = e.image("e2e/private", "tok", [small_layers("tok")[0].entries], reg=reg,
                   creds=reg.creds)
    t = e.target("tok")
    e.publish_vol(e.inline_request(info.ref, t, secrets={"username": "alice",
                                                         "password": "secret"}))
    assert Path(t, "tok.txt").read_text() == "tok\n"
    err = e.publish_err(e.inline_request(info.ref, e.target("bad"), pullPolicy="Always"))
    assert err.code() in (SC.UNAUTHENTICATED, SC.PERMISSION_DENIED), \
        f"anonymous on a token registry: got {err.code().name}: {err.details()!r}"


def test_secrets_not_persisted(auth_env):
    """Credentials from a publish never land in the plugin's --root (state, logs, cache)."""
    e, reg = auth_env
    info = e.image("e2e/private", "persist", [small_layers("persist")[0].entries], reg=reg,
                   creds=reg.creds)
    pw = "S3cr3t-Only-For-Persist"
    t = e.target("persist")
    e.publish_vol(e.inline_request(info.ref, t, secrets={"username": "alice",
                                                         "password": "secret"}))
    # ...and a failing publish carrying a distinctive password
    e.publish_err(e.inline_request(info.ref + "-x", e.target("bad"),
                                   secrets={"username": "alice", "password": pw},
                                   pullPolicy="Always"))
    needles = [b"alice:secret", base64.b64encode(b"alice:secret"), pw.encode(),
               base64.b64encode(f"alice:{pw}".encode())]
    for dirpath, _, files in os.walk(e.plugin.root):
        for f in files:
            path = os.path.join(dirpath, f)
            if os.path.islink(path) or os.path.getsize(path) > (8 << 20):
                continue
            data = open(path, "rb").read()
            for n in needles:
                assert n not in data, f"{path} contains a credential ({n!r})"


# --------------------------------------------------------------------------------------
# Volume stats and metrics
# --------------------------------------------------------------------------------------


def test_volume_stats(e):
    info = e.models()
    target = e.target("stats")
    req = e.pv_request(info.ref, target, "stats-pv")
    e.publish_vol(req)
    pb = e.pb
    try:
        resp = e.plugin.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id="stats-pv", volume_path=target), timeout=30)
    except grpc.RpcError as ex:
        raise AssertionError(f"NodeGetVolumeStats: {ex.code()} {ex.details()}") from None
    units = {u.unit: u for u in resp.usage}
    assert pb.VolumeUsage.BYTES in units, f"no BYTES usage: {resp}"
    b = units[pb.VolumeUsage.BYTES]
    files = sum(n.size for n in expected_tree(info.entries).values() if n.type == "file")
    assert b.used >= files * 0.5 or b.total >= files * 0.5, \
        f"BYTES usage {b} does not reflect the image's {files} bytes of files"
    for u in resp.usage:
        assert u.total >= 0 and u.used >= 0 and u.available >= 0, u
    if resp.HasField("volume_condition"):
        assert not resp.volume_condition.abnormal, resp.volume_condition
    e.unpublish("stats-pv", target)
    err = rpc_error(e.plugin.node.NodeGetVolumeStats,
                    pb.NodeGetVolumeStatsRequest(volume_id="stats-pv", volume_path=target))
    assert_code(err, SC.NOT_FOUND, "NodeGetVolumeStats", "after unpublish")


def scrape(port: int) -> Tuple[str, Dict[str, float]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode()
    assert ctype.startswith("text/plain") or "openmetrics" in ctype, ctype
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$", line)
        assert m, f"not Prometheus text exposition: {line!r}"
        samples[m.group(1)] = float(m.group(2))
    return text, samples


def test_metrics(e):
    info = e.small("metrics")
    target = e.target("metrics")
    e.publish_vol(e.inline_request(info.ref, target))
    # and one error, to be counted by rpc and code
    e.publish_err(e.inline_request("Not A/Valid::Ref!", e.target("bad")))
    text, samples = scrape(e.plugin.metrics_port)

    def find(*words, labels=()):
        return {k: v for k, v in samples.items()
                if all(w in k.split("{")[0].lower() for w in words)
                and all(l.lower() in k.lower() for l in labels)}

    pulls = find("pull")
    assert pulls and max(pulls.values()) >= 1, f"no pull counter >= 1:\n{text}"
    cache = {k: v for k, v in samples.items()
             if "cache" in k.split("{")[0].lower() or "store" in k.split("{")[0].lower()}
    assert cache and max(cache.values()) > 0, f"no cache size > 0:\n{text}"
    live = {k: v for k, v in find("volume").items()
            if not re.search(r"error|rpc|request|grpc", k.split("{")[0].lower())}
    assert live and max(live.values()) >= 1, f"no live volume gauge >= 1:\n{text}"
    errs = {k: v for k, v in find("error").items() if "NodePublishVolume" in k
            and re.search(r"INVALID_ARGUMENT|InvalidArgument|invalid_argument|\"3\"", k)}
    assert errs and max(errs.values()) >= 1, \
        f"no error counter labelled with rpc NodePublishVolume and code INVALID_ARGUMENT:\n{text}"


def test_damaged_layer_is_eio_and_counted(e):
    """A bit flipped in a stored layer after the pull: the pod's reads of it fail with EIO
    (never wrong bytes) and the damage shows in the metrics until repaired."""
    info = e.small("damaged")
    target = e.target("damaged")
    req = e.inline_request(info.ref, target)
    e.publish_vol(req)
    for diff_id in info.diff_ids:
        flip(e.plugin.root / "layers" / (diff_id.split(":")[1] + ".tar"), 700)
    failed = 0
    for dirpath, _, names in os.walk(target):
        for n in names:
            try:
                with open(os.path.join(dirpath, n), "rb") as f:
                    f.read()
            except OSError as ex:
                assert ex.errno == errno.EIO, ex
                failed += 1
    assert failed >= 1, "no read failed after the layer was damaged"
    _, samples = scrape(e.plugin.metrics_port)
    assert samples.get("imgvol_csi_damaged_parts", 0) >= 1, samples
    e.unpublish(req.volume_id, target)
    res = e.plugin.imgvol.run("check", "--repair", "--tls-verify=false")
    assert res.rc == 0, res.describe()
    _, samples = scrape(e.plugin.metrics_port)
    assert samples.get("imgvol_csi_damaged_parts") == 0, samples


# --------------------------------------------------------------------------------------
# Slow: deadlines and restarts
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pull_outlasting_the_deadline_is_joined_by_the_retry(own_env, make_proxy):
    e = own_env
    size = 3 << 20
    info = e.image("e2e/slow", "v1", [big_layers(size, seed=21)[0].entries])
    layer = info.layer_digests[0]
    px = make_proxy(e.reg.host)
    px.set_faults(throttle=512 * 1024, only=[layer])          # ~6 s for the layer
    ref = f"{px.host}/e2e/slow:v1"
    target = e.target("slow")
    req = e.inline_request(ref, target)

    t0 = time.monotonic()
    err = e.publish_err(req, timeout=1.5)
    assert_code(err, SC.DEADLINE_EXCEEDED, what="(client deadline 1.5 s)")
    assert time.monotonic() - t0 < 5
    assert not is_mounted(target)
    assert px.wait_for(lambda p: p.blob_gets(layer), 10), "the pull did not reach the blob"

    e.publish_vol(req, timeout=90)                            # kubelet's retry
    assert read_tree_digests(target) == expected_files(info)
    px.settle()
    gets = px.blob_gets(layer)
    assert len(gets) == 1 and gets[0].complete, \
        f"the layer should be downloaded once (the retry joins the pull): " \
        f"{[(g.status, g.range, g.bytes_sent, g.complete) for g in gets]}"
    e.unpublish(req.volume_id, target)


def _slow_image(e: Env, make_proxy, tag: str, size: int = 3 << 20, rate: int = 512 * 1024):
    seed = int(hashlib.sha256(tag.encode()).hexdigest()[:4], 16)
    info = e.image("e2e/slow", tag, [big_layers(size, seed=seed)[0].entries])
    layer = info.layer_digests[0]
    px = make_proxy(e.reg.host)
    px.set_faults(throttle=rate, only=[layer])
    return info, layer, px, f"{px.host}/e2e/slow:{tag}"


@pytest.mark.slow
def test_unpublish_during_pull_leaves_nothing(own_env, make_proxy):
    """kubelet gave up (deadline), the pod is deleted and kubelet unpublishes while the pull
    still runs: when the pull later finishes, nothing may get mounted at the target."""
    e = own_env
    info, layer, px, ref = _slow_image(e, make_proxy, "gone")
    target = e.target("gone")
    req = e.inline_request(ref, target)
    err = e.publish_err(req, timeout=1.5)
    assert_code(err, SC.DEADLINE_EXCEEDED, what="(client deadline 1.5 s)")
    e.unpublish(req.volume_id, target)
    assert not is_mounted(target) and not os.path.exists(target)
    assert px.wait_for(lambda p: any(g.end is not None for g in p.blob_gets(layer)), 60), \
        "the pull did not finish"
    time.sleep(3)
    assert not is_mounted(target), \
        f"the abandoned publish mounted {target} after NodeUnpublishVolume: {mount_entry(target)}"
    assert not os.path.exists(target), "the abandoned publish re-created the target"
    # the pull itself was not wasted: a new publish of the image needs no download
    px.reset()
    t2 = e.target("again")
    e.publish_vol(e.inline_request(ref, t2, pullPolicy="IfNotPresent"), timeout=60)
    assert read_tree_digests(t2) == expected_files(info)


@pytest.mark.slow
def test_restart_during_pull(own_env, make_proxy):
    """The plugin is killed while a publish is pulling; kubelet's retry against the
    restarted plugin succeeds and the volume is complete."""
    e = own_env
    info, layer, px, ref = _slow_image(e, make_proxy, "midpull")
    target = e.target("midpull")
    req = e.inline_request(ref, target)
    err = e.publish_err(req, timeout=1.5)
    assert_code(err, SC.DEADLINE_EXCEEDED, what="(client deadline 1.5 s)")
    assert px.wait_for(lambda p: p.blob_bytes_sent(layer) > 0, 10)
    e.plugin.killpg(signal.SIGKILL)
    kill_servers(e.plugin.root)             # a pull helper process, if any
    e.plugin.start()
    px.set_faults()                         # full speed now
    e.publish_vol(req, timeout=120)
    assert read_tree_digests(target) == expected_files(info)
    e.unpublish(req.volume_id, target)


def _reader_ok(target: str, want: Dict[str, str]) -> Optional[str]:
    """None when the volume answers statfs, readdir and reads correctly, else why not."""
    try:
        os.statvfs(target)
        names = {n for n, *_ in readdir(target)}
        if not names:
            return "empty readdir"
        for rel, digest in want.items():
            with open(os.path.join(target, rel), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    return f"{rel}: wrong content"
        return None
    except OSError as ex:
        return f"{errno.errorcode.get(ex.errno, ex.errno)}: {ex}"


def _shared_kubelet_dir(e: Env) -> None:
    """kubelet's root dir is an rshared mount (kubelet makes it so); here / may be private,
    so bind the test's kubelet dir onto itself and make it shared."""
    k = str(e.kubelet)
    r = _run(["mount", "--bind", k, k], timeout=30)
    assert r.rc == 0, r.describe()
    e.cleanups.append(lambda: _run(["umount", "-l", k], timeout=30))
    r = _run(["mount", "--make-shared", k], timeout=30)
    assert r.rc == 0, r.describe()


def _restart_case(e: Env, kill_servers_too: bool) -> None:
    _shared_kubelet_dir(e)
    info = e.models()
    want = expected_files(info)
    t_inline, t_pv = e.target("r-inline"), e.target("r-pv")
    r_inline = e.inline_request(info.ref, t_inline)
    r_pv = e.pv_request(info.ref, t_pv, "restart-pv", subPath="models")
    e.publish_vol(r_inline)
    e.publish_vol(r_pv)
    want_pv = {k[len("models/"):]: v for k, v in want.items() if k.startswith("models/")}
    assert _reader_ok(t_inline, want) is None and _reader_ok(t_pv, want_pv) is None

    # a "container" that bind-sees the volume the way a pod with mountPropagation
    # HostToContainer does: a mount namespace whose mounts are slaves of the host's
    pod = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "sleep", "600"],
                           start_new_session=True)
    e.cleanups.append(lambda: (pod.kill(), pod.wait()))
    in_pod = ["nsenter", "-t", str(pod.pid), "-m", "--"]
    wait_until(lambda: os.readlink(f"/proc/{pod.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"),
               10, what="the pod's mount namespace")

    def pod_reads() -> Optional[str]:
        r = _run(in_pod + ["sha256sum", os.path.join(t_inline, "models/weights/part-0.bin")],
                 timeout=20)
        ok = r.rc == 0 and r.stdout.split()[:1] == [want["models/weights/part-0.bin"]]
        return None if ok else (r.stderr.strip() or r.stdout.strip() or f"rc={r.rc}")
    assert pod_reads() is None

    old_pid = e.plugin.proc.pid
    e.plugin.killpg(signal.SIGKILL)
    assert not pid_alive(old_pid)
    if kill_servers_too:                       # what a container restart does
        kill_servers(e.plugin.root)

        def dead(t):
            try:
                os.statvfs(t)
                return False
            except OSError as ex:
                return ex.errno == errno.ENOTCONN
        wait_until(lambda: dead(t_inline) and dead(t_pv), 10,
                   what="ENOTCONN on the mounts whose servers were killed")
    else:
        # servers in their own process groups would keep serving while the plugin is down
        down_ok = _reader_ok(t_inline, want) is None
        print(f"reads while the plugin is down: {'working' if down_ok else 'failing'}")

    e.plugin.start()
    up = time.monotonic()
    deadline = up + RESTORE_BUDGET
    problems = {}
    while True:
        problems = {t: why for t, w in ((t_inline, want), (t_pv, want_pv))
                    if (why := _reader_ok(t, w)) is not None}
        if not problems and (why := pod_reads()) is not None:
            problems["pod (HostToContainer) view of " + t_inline] = why
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not problems, \
        f"reads not restored {RESTORE_BUDGET}s after the restarted plugin answered Probe: " \
        f"{problems}\n{e.plugin.log_tail()}"
    for t in (t_inline, t_pv):
        assert_ro_mount(t)
    check_volume(t_inline, info)
    # the restarted plugin knows the volumes: idempotent publish, stats, unpublish
    e.publish_vol(r_inline)
    pb = e.pb
    e.plugin.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
        volume_id="restart-pv", volume_path=t_pv), timeout=30)
    err = rpc_error(e.plugin.node.NodePublishVolume,
                    e.inline_request(e.small("other").ref, t_inline,
                                     volume_id=r_inline.volume_id), timeout=KUBELET_TIMEOUT)
    assert_code(err, SC.ALREADY_EXISTS, what="after restart, other image")
    t_new = e.target("r-new")                 # and it publishes new volumes as before
    r_new = e.inline_request(info.ref, t_new, pullPolicy="Never")
    e.publish_vol(r_new)
    check_volume(t_new, info)
    e.unpublish(r_new.volume_id, t_new)
    for r in (r_inline, r_pv):
        e.unpublish(r.volume_id, r.target_path)
        assert not is_mounted(r.target_path) and not os.path.exists(r.target_path)
    time.sleep(0.5)
    left = [p for t in (t_inline, t_pv) for p in pids_mentioning(t)
            if "imgvol" in (cmdline(p)[:1] or [""])[0]]
    assert not left, f"servers left after unpublish: {[cmdline(p) for p in left]}"


@pytest.mark.slow
def test_restart_killpg_keeps_volumes(own_env):
    """SIGKILL of the plugin's process group: volumes keep working (or come back within
    seconds of the restart with the same --root), and the new plugin can unpublish them."""
    _restart_case(own_env, kill_servers_too=False)


@pytest.mark.slow
def test_restart_after_servers_died_restores_volumes(own_env):
    """The container restart case: the plugin *and* every FUSE server are killed; the dead
    mounts (ENOTCONN) are restored by the restarted plugin."""
    _restart_case(own_env, kill_servers_too=True)


def test_lazy_volume_stats_while_downloading(e, make_proxy):
    """NodeGetVolumeStats answers from the mount while a lazy volume's image still arrives
    (kubelet asks every minute; a big model takes longer than that)."""
    entries = [Dir("weights", mtime=T0), File("weights/w.bin", pseudo_random(9 << 20, 77), mtime=T0),
               File("README", "lazy stats\n", mtime=T0)]
    info = e.publish.image(e.reg.host, "e2e/lazy-stats", "v1", [Layer(entries, "none")])
    px = make_proxy(e.reg.host)
    px.set_faults(throttle=256 * 1024, only=[info.layer_digests[0]])   # ~36 s for the layer
    ref = f"{px.host}/e2e/lazy-stats:v1"
    target = e.target("lazy-stats")
    req = e.inline_request(ref, target, lazy="true")
    e.publish_vol(req)
    assert not any(i.get("digest") == info.manifest_digest for i in e.plugin.imgvol.images()), \
        "the throttled download finished already: the test would not see a lazy volume"
    resp = e.plugin.node.NodeGetVolumeStats(
        e.pb.NodeGetVolumeStatsRequest(volume_id=req.volume_id, volume_path=target), timeout=30)
    units = {u.unit: u for u in resp.usage}
    assert units[e.pb.VolumeUsage.BYTES].used >= 9 << 20, resp
    assert units[e.pb.VolumeUsage.INODES].used >= 3, resp
    e.unpublish(req.volume_id, target)


# --------------------------------------------------------------------------------------
# Failover: mounts outlive their servers and the plugin
# --------------------------------------------------------------------------------------

MiB = 1 << 20


def _failover_image(e: Env):
    from support.readers import chunk_digests
    big = pseudo_random(32 * MiB + 3, 71)
    small = {f"s/f{k:03}.txt": (f"{k}\n" * (1 + k % 30)).encode() for k in range(300)}
    info = e.image("e2e/failover", "v1", [[File("model.bin", big, mtime=T0)],
                                          [Dir("s", mtime=T0)] + [File(n, d, mtime=T0) for n, d in small.items()]])
    return info, {"model.bin": chunk_digests(big)}, {n: hashlib.sha256(d).hexdigest() for n, d in small.items()}


def _record(plugin: Plugin, target: str) -> dict:
    res = plugin.imgvol.run("mounts", "--format", "json", timeout=30)
    assert res.rc == 0, res.describe()
    found = [m for m in json.loads(res.stdout) if m["mountpoint"] == target]
    assert found, f"{target} not listed: {res.stdout}"
    return found[0]


@pytest.mark.slow
def test_server_and_plugin_kills_are_invisible_to_pods(own_env, tmp_path):
    """A pod reads a published volume through a bind mount of the target (as a container
    sees it) with 8 readers, while the volume's server is SIGKILLed 5 times and the plugin's
    whole process group once: zero reader errors, every checksum right; the restarted plugin
    keeps the volume (and counts the restarts in its metrics)."""
    from support.readers import Readers
    e = own_env
    info, big, small = _failover_image(e)
    target = e.target("failover")
    req = e.inline_request(info.ref, target)
    e.publish_vol(req)
    view = tmp_path / "pod-view"
    view.mkdir()
    r = _run(["mount", "--bind", target, str(view)], timeout=30)
    assert r.rc == 0, r.describe()
    e.cleanups.append(lambda: lazy_umount(str(view)))
    readers = Readers(str(view), big, small).start(8)
    try:
        for k in range(5):
            readers.wait_for_ops(1)
            if k == 2:
                e.plugin.killpg(signal.SIGKILL)          # the plugin's process group only
            before = _record(e.plugin, target)
            os.kill(before["pid"], signal.SIGKILL)
            wait_until(lambda: (lambda m: m["pid"] != before["pid"] and pid_alive(m["pid"]))(_record(e.plugin, target)),
                       30, what=f"server #{k + 1} of the volume")
            if k == 2:
                e.plugin.start()
        readers.wait_for_ops(2)
    finally:
        readers.stop()
    assert readers.errors == [], "\n".join(readers.errors[:30])
    assert _record(e.plugin, target)["restarts"] == 5
    _, samples = scrape(e.plugin.metrics_port)
    assert samples.get(f'imgvol_csi_server_restarts{{volume_id="{req.volume_id}"}}') == 5, samples
    e.unpublish(req.volume_id, target)


@pytest.mark.slow
def test_dead_mount_is_restored_while_the_plugin_runs(own_env):
    """Keeper and server killed together (nothing holds the mount's descriptor): the running
    plugin notices at once, serves the volume again at the same target, says so in its log
    and counts it."""
    e = own_env
    info, big, small = _failover_image(e)
    target = e.target("restore")
    req = e.inline_request(info.ref, target)
    e.publish_vol(req)
    first = _record(e.plugin, target)
    kill_mount_processes(first)

    def served_again():
        try:
            m = _record(e.plugin, target)
        except AssertionError:
            return None
        if m["pid"] == first["pid"] or not pid_alive(m["pid"]):
            return None
        with open(os.path.join(target, "s/f001.txt"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == small["s/f001.txt"]
    assert wait_until(served_again, 30, what="the plugin to serve the dead volume again")
    assert "everything serving" in e.plugin.log_text()
    _, samples = scrape(e.plugin.metrics_port)
    assert samples.get("imgvol_csi_volume_restores_total") == 1, samples
    assert_ro_mount(target)
    assert len(mount_entries(target)) == 1, f"a mount was stacked: {mount_entries(target)}"
    e.unpublish(req.volume_id, target)
