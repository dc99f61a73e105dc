"""deploy/: the Kubernetes manifests and the Containerfile say what the CSI plugin needs.

Static checks only (PyYAML, no cluster, no imgvol binary): every YAML file parses, the
CSIDriver, DaemonSet and examples carry the fields kubelet and the plugin rely on, and the
Containerfile builds the release binary into a runtime image with FUSE.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in Tests/e2e/requirements.txt")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DRIVER = "csi.imgvol.dev"
NAMESPACE = "imgvol-system"
PINNED = re.compile(r"^[a-z0-9.-]+(?:/[a-z0-9._-]+)+:v\d+\.\d+\.\d+$")


def load(name: str) -> List[dict]:
    path = K8S / name
    assert path.is_file(), f"{path} is missing"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML documents"
    for d in docs:
        assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), \
            f"{name}: not a Kubernetes object: {d!r}"[:300]
        if d["kind"] != "Kustomization":
            assert (d.get("metadata") or {}).get("name"), f"{name}: {d['kind']} without a name"
    return docs


def one(docs: List[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[d['kind'] for d in docs]}"
    return found[0]


@pytest.fixture(scope="module")
def all_docs() -> Dict[str, List[dict]]:
    files = sorted(p.name for p in K8S.glob("*.yaml"))
    assert files, f"no manifests in {K8S}"
    return {f: load(f) for f in files}


@pytest.fixture(scope="module")
def daemonset() -> dict:
    return one(load("daemonset.yaml"), "DaemonSet")


@pytest.fixture(scope="module")
def pod_spec(daemonset) -> dict:
    return daemonset["spec"]["template"]["spec"]


def container(pod_spec: dict, image_part: str) -> dict:
    cs = [c for c in pod_spec["containers"] if image_part in c["image"]]
    assert len(cs) == 1, f"one container with {image_part!r} in its image: " \
                         f"{[c['image'] for c in pod_spec['containers']]}"
    return cs[0]


def plugin(pod_spec: dict) -> dict:
    cs = [c for c in pod_spec["containers"]
          if "csi" in (c.get("args") or []) or "csi" in (c.get("command") or [])]
    assert len(cs) == 1, "exactly one container runs `imgvol csi`"
    return cs[0]


def volumes(pod_spec: dict) -> Dict[str, dict]:
    return {v["name"]: v for v in pod_spec.get("volumes", [])}


def mount_of(c: dict, path: str) -> dict:
    ms = [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(ms) == 1, f"{c['name']}: one volumeMount at {path}: {c.get('volumeMounts')}"
    return ms[0]


def arg_value(args: List[str], flag: str) -> str:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


# -- every file ------------------------------------------------------------------------------

def test_expected_files_exist():
    for name in ("namespace.yaml", "csidriver.yaml", "daemonset.yaml", "example-inline-pod.yaml",
                 "example-pv-pvc.yaml", "kustomization.yaml", "README.md"):
        assert (K8S / name).is_file(), f"deploy/kubernetes/{name} is missing"
    assert (DEPLOY / "Containerfile").is_file()


def test_every_yaml_parses(all_docs):
    assert set(all_docs) >= {"namespace.yaml", "csidriver.yaml", "daemonset.yaml",
                             "example-inline-pod.yaml", "example-pv-pvc.yaml",
                             "kustomization.yaml"}


def test_kustomization_lists_existing_files(all_docs):
    k = one(all_docs["kustomization.yaml"], "Kustomization")
    res = k.get("resources") or []
    assert {"namespace.yaml", "csidriver.yaml", "daemonset.yaml"} <= set(res), res
    for r in res:
        assert (K8S / r).is_file(), f"kustomization lists {r}, which does not exist"


def test_namespace():
    ns = one(load("namespace.yaml"), "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE


# -- CSIDriver -------------------------------------------------------------------------------

def test_csidriver():
    d = one(load("csidriver.yaml"), "CSIDriver")
    assert d["apiVersion"] == "storage.k8s.io/v1"
    assert d["metadata"]["name"] == DRIVER
    spec = d["spec"]
    assert spec["attachRequired"] is False
    assert spec["podInfoOnMount"] is True
    assert sorted(spec["volumeLifecycleModes"]) == ["Ephemeral", "Persistent"]
    assert spec["fsGroupPolicy"] == "None"
    assert spec["requiresRepublish"] is False


# -- DaemonSet -------------------------------------------------------------------------------

def test_daemonset_basics(daemonset, pod_spec):
    assert daemonset["apiVersion"] == "apps/v1"
    assert daemonset["metadata"]["namespace"] == NAMESPACE
    sel = daemonset["spec"]["selector"]["matchLabels"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert sel and all(labels.get(k) == v for k, v in sel.items()), (sel, labels)
    assert pod_spec["priorityClassName"] == "system-node-critical"
    assert pod_spec.get("hostPID") is False
    assert {"operator": "Exists"} in pod_spec["tolerations"], \
        f"should tolerate every taint: {pod_spec['tolerations']}"


def test_service_account(daemonset, pod_spec):
    sa = one(load("daemonset.yaml"), "ServiceAccount")
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert pod_spec["serviceAccountName"] == sa["metadata"]["name"]


def test_plugin_container(pod_spec):
    c = plugin(pod_spec)
    assert c["securityContext"]["privileged"] is True
    args = c["args"]
    assert args[0] == "csi"
    assert arg_value(args, "--endpoint") == "unix:///csi/csi.sock"
    assert arg_value(args, "--node-id") == "$(NODE_NAME)"
    assert arg_value(args, "--root") == "/var/lib/imgvol"
    assert arg_value(args, "--metrics-address") == "0.0.0.0:9810"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    res = c["resources"]
    assert res.get("requests") and res.get("limits"), res
    assert mount_of(c, "/csi")


def test_plugin_host_paths(pod_spec):
    c = plugin(pod_spec)
    vols = volumes(pod_spec)

    def host(path: str) -> dict:
        m = mount_of(c, path)
        hp = vols[m["name"]].get("hostPath")
        assert hp, f"{path} should be a hostPath volume: {vols[m['name']]}"
        return hp

    fuse = host("/dev/fuse")
    assert fuse == {"path": "/dev/fuse", "type": "CharDevice"}
    kubelet = host("/var/lib/kubelet")
    assert kubelet["path"] == "/var/lib/kubelet"
    assert mount_of(c, "/var/lib/kubelet")["mountPropagation"] == "Bidirectional"
    cache = host("/var/lib/imgvol")
    assert cache == {"path": "/var/lib/imgvol", "type": "DirectoryOrCreate"}
    sock = host("/csi")
    assert sock == {"path": f"/var/lib/kubelet/plugins/{DRIVER}", "type": "DirectoryOrCreate"}


def test_sidecars_pinned(pod_spec):
    for c in pod_spec["containers"]:
        img = c["image"]
        assert not img.endswith(":latest") and ":" in img.rsplit("/", 1)[-1], \
            f"{c['name']}: image not pinned to a tag: {img}"
    reg = container(pod_spec, "csi-node-driver-registrar")
    live = container(pod_spec, "livenessprobe")
    assert reg["image"] == "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0"
    assert live["image"] == "registry.k8s.io/sig-storage/livenessprobe:v2.15.0"
    for c in (reg, live):
        assert PINNED.match(c["image"]), c["image"]
        assert c.get("resources"), f"{c['name']} has no resources"


def test_registrar(pod_spec):
    reg = container(pod_spec, "csi-node-driver-registrar")
    args = reg["args"]
    assert "--csi-address=/csi/csi.sock" in args, args
    assert f"--kubelet-registration-path=/var/lib/kubelet/plugins/{DRIVER}/csi.sock" in args, args
    vols = volumes(pod_spec)
    m = mount_of(reg, "/registration")
    assert vols[m["name"]]["hostPath"]["path"] == "/var/lib/kubelet/plugins_registry"
    m = mount_of(reg, "/csi")
    assert vols[m["name"]]["hostPath"]["path"] == f"/var/lib/kubelet/plugins/{DRIVER}"


def test_liveness_probe_uses_sidecar_port(pod_spec):
    live = container(pod_spec, "livenessprobe")
    assert "--csi-address=/csi/csi.sock" in live["args"], live["args"]
    port = int(arg_value(live["args"], "--health-port"))
    c = plugin(pod_spec)
    probe = c["livenessProbe"]["httpGet"]
    p = probe["port"]
    if isinstance(p, str):                        # a named port of the plugin container
        p = {q["name"]: q["containerPort"] for q in c["ports"]}[p]
    assert p == port, f"plugin liveness probe port {p} != livenessprobe --health-port {port}"
    assert probe["path"] == "/healthz"


# -- examples --------------------------------------------------------------------------------

def _csi_volumes(pod: dict) -> List[dict]:
    return [v["csi"] for v in pod["spec"]["volumes"] if "csi" in v]


def test_example_inline_pod():
    docs = load("example-inline-pod.yaml")
    pod = one(docs, "Pod")
    [csi] = _csi_volumes(pod)
    assert csi["driver"] == DRIVER
    assert csi["readOnly"] is True
    attrs = csi["volumeAttributes"]
    assert attrs["image"] and "/" in attrs["image"], attrs
    assert attrs["pullPolicy"] in ("Always", "IfNotPresent", "Never"), attrs
    secret_name = csi["nodePublishSecretRef"]["name"]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if secrets:                                   # an example Secret, if shipped, matches
        assert secret_name in {s["metadata"]["name"] for s in secrets}
    _check_consumer_mounts(pod)


def _check_consumer_mounts(pod: dict) -> None:
    """Read-only, and HostToContainer so a remount by a restarted plugin reaches the pod."""
    for c in pod["spec"]["containers"]:
        assert c["image"].rsplit(":", 1)[-1] != "latest" and ":" in c["image"], c["image"]
        for m in c.get("volumeMounts", []):
            assert m.get("readOnly") is True, m
            assert m.get("mountPropagation") == "HostToContainer", m


def test_example_pv_pvc():
    docs = load("example-pv-pvc.yaml")
    pv, pvc, pod = one(docs, "PersistentVolume"), one(docs, "PersistentVolumeClaim"), \
        one(docs, "Pod")
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pv["spec"]["storageClassName"] == ""
    csi = pv["spec"]["csi"]
    assert csi["driver"] == DRIVER
    assert csi["volumeHandle"]
    assert csi["volumeAttributes"]["image"]
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pvc["spec"]["storageClassName"] == ""
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [pvc["metadata"]["name"]]
    _check_consumer_mounts(pod)
    assert pod["metadata"].get("namespace", "default") == pvc["metadata"].get("namespace",
                                                                              "default")


# -- Containerfile ---------------------------------------------------------------------------

# In every debian:12-slim image already.
_BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}


def _shared_library_packages(binary: str) -> List[str]:
    """The Debian packages holding the shared libraries `binary` loads (the Swift runtime,
    linked statically into the image's build, belongs to no package and is skipped)."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    packages = set()
    for path in re.findall(r"=> (/\S+)", out):
        real = os.path.realpath(path)
        for candidate in (path, real, re.sub(r"^/usr/lib/", "/lib/", real)):
            found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if found.returncode == 0:
                packages.add(found.stdout.split(":")[0])
                break
    assert "libfuse3-3" in packages, f"ldd {binary} found no libfuse3 package: {out}"
    return sorted(packages - _BASE_PACKAGES)


def test_containerfile(imgvol_bin):
    text = (DEPLOY / "Containerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, f"multi-stage build expected: {froms}"
    assert re.search(r"swift:6\.\d", text), "build stage should use a swift:6.x image"
    assert "debian:12-slim" in text
    assert re.search(r"swift build -c release --product imgvol", text)
    runtime = text[text.rindex("\nFROM "):]              # the last stage
    for pkg in ("fuse3", "ca-certificates") + tuple(_shared_library_packages(imgvol_bin)):
        assert re.search(rf"\b{re.escape(pkg)}\b", runtime), f"runtime stage lacks {pkg}"
    assert re.search(r"COPY --from=\S+ \S+ /usr/local/bin/imgvol", runtime), \
        "the binary should be copied to /usr/local/bin/imgvol"
    assert 'ENTRYPOINT ["/usr/local/bin/imgvol"]' in lines
