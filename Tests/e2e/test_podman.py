"""Containers reading an imgvol mount through a podman bind mount (-v MOUNTPOINT:/model).

podman runs with private storage (the session fixture ``podman_session``) and only as
``--runtime runc --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024``,
with a busybox image imported once per session.
"""

from __future__ import annotations

import hashlib

import pytest

from support.images import pseudo_random
from support.mounts import is_mounted, models_entries, read_tree_digests, subtree
from support.oci_layout import Layer
from support.tree import expected_tree, walk

# busybox `stat -c %F` names
BB_TYPES = {"file": "regular file", "dir": "directory", "symlink": "symbolic link"}


@pytest.fixture
def models(registry, publish):
    entries = models_entries()
    info = publish.image(registry.host, "e2e/models", "v1", [Layer(e, "gzip") for e in entries])
    info.entries = entries
    info.tree = expected_tree(entries)
    return info


LIST_SCRIPT = (
    "cd /model || exit 9\n"
    "find . | sort\n"
    "echo '=== sha'\n"
    "find . -type f | sort | xargs sha256sum\n"
    "echo '=== stat'\n"
    "find . -exec stat -c '%n|%F|%a|%u|%g|%s' {} + | sort\n"
)


def parse_listing(out: str):
    sections = out.split("=== sha\n")
    assert len(sections) == 2, out
    names_part, rest = sections
    sha_part, stat_part = rest.split("=== stat\n")
    names = {ln[2:] for ln in names_part.splitlines() if ln.startswith("./")}
    shas = {}
    for ln in sha_part.splitlines():
        digest, path = ln.split(None, 1)
        shas[path.strip()[2:]] = digest
    stats = {}
    for ln in stat_part.splitlines():
        n, typ, mode, uid, gid, size = ln.rsplit("|", 5)
        if n == ".":
            continue
        stats[n[2:]] = (typ, int(mode, 8), int(uid), int(gid), int(size))
    return names, shas, stats


def check_listing(out: str, tree: dict):
    names, shas, stats = parse_listing(out)
    assert names == set(tree), (sorted(names), sorted(tree))
    want_sha = {p: n.sha256 for p, n in tree.items() if n.type == "file"}
    assert shas == want_sha
    for p, n in tree.items():
        typ, mode, uid, gid, size = stats[p]
        assert typ == BB_TYPES[n.type], (p, typ, n)
        if n.type != "symlink":
            assert mode == n.mode, (p, oct(mode), oct(n.mode))
        assert (uid, gid) == (n.uid, n.gid), (p, uid, gid, n)
        if n.type == "file":
            assert size == n.size, (p, size, n.size)


def test_container_reads_mount(podman, mounter, models):
    mp = mounter.mount_ok(models.ref)
    res = podman.run_container(podman.unique("read"), ["-v", f"{mp}:/model:ro"],
                               "sh", "-c", LIST_SCRIPT)
    assert res.rc == 0, res.describe()
    check_listing(res.stdout, models.tree)
    # the container's exit and removal leave the host mount alone
    assert podman.podman("rm", res.cmd[res.cmd.index("--name") + 1]).rc == 0
    assert is_mounted(mp)
    assert read_tree_digests(mp) == {p: n.sha256 for p, n in models.tree.items()
                                     if n.type == "file"}


def test_container_reads_subpath_mount(podman, mounter, models):
    mp = mounter.mount_ok(models.ref, None, "--subpath", "models")
    res = podman.run_container(podman.unique("sub"), ["-v", f"{mp}:/model:ro"],
                               "sh", "-c", LIST_SCRIPT)
    assert res.rc == 0, res.describe()
    check_listing(res.stdout, subtree(models.tree, "models"))


WRITE_SCRIPT = (
    "touch /model/new 2>&1; echo \"touch=$?\"\n"
    "echo x > /model/models/config.json 2>&1; echo \"write=$?\"\n"
    "echo x >> /model/README 2>&1; echo \"append=$?\"\n"
    "mkdir /model/d 2>&1; echo \"mkdir=$?\"\n"
    "rm /model/README 2>&1; echo \"rm=$?\"\n"
    "mv /model/README /model/README2 2>&1; echo \"mv=$?\"\n"
    "ln -s x /model/link 2>&1; echo \"ln=$?\"\n"
    "chmod 777 /model/README 2>&1; echo \"chmod=$?\"\n"
)


@pytest.mark.parametrize("opts", [":ro", ""], ids=["ro-bind", "rw-bind"])
def test_container_cannot_write(podman, mounter, models, opts):
    """Writes fail inside the container, also when the bind mount itself is not :ro."""
    mp = mounter.mount_ok(models.ref)
    before = walk(mp)
    res = podman.run_container(podman.unique("write"), ["-v", f"{mp}:/model{opts}"],
                               "sh", "-c", WRITE_SCRIPT)
    assert res.rc == 0, res.describe()
    results = dict(ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln
                   and ln.split("=", 1)[0].isalpha())
    assert set(results) == {"touch", "write", "append", "mkdir", "rm", "mv", "ln", "chmod"}, \
        res.stdout
    assert all(v != "0" for v in results.values()), res.stdout
    assert res.stdout.count("Read-only file system") >= 6, res.stdout
    assert walk(mp) == before, "the container changed the mount"


def test_two_containers_share_one_mount(podman, mounter, models):
    mp = mounter.mount_ok(models.ref)
    script = "sha256sum /model/models/weights/part-0.bin"
    want = pseudo_random(256 * 1024, 11)
    digest = hashlib.sha256(want).hexdigest()
    a = podman.unique("a")
    b = podman.unique("b")
    ra = podman.run_container(a, ["-v", f"{mp}:/model:ro"], "sh", "-c", script)
    rb = podman.run_container(b, ["-v", f"{mp}:/m2:ro", "-v", f"{mp}:/model:ro"],
                              "sh", "-c", script + " && ls /m2")
    assert ra.rc == 0 and rb.rc == 0, ra.describe() + rb.describe()
    assert ra.stdout.split()[0] == digest and rb.stdout.split()[0] == digest
    assert sorted(rb.stdout.split()[2:]) == ["README", "etc", "models"]
