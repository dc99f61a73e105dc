"""csi-proto/csi.proto stays wire-compatible with the official CSI v1.12.0 csi.proto.

Both files are compiled with grpc_tools.protoc (`pip install grpcio-tools`) into
descriptor sets, then compared:

- every message of ours (nested ones and map entries included) exists in the official
  file under the same full name, with exactly the same fields: number, name, type,
  label, type_name, oneof membership and map-entry-ness;
- every enum of ours has exactly the same values;
- the Identity and Node services have the same methods with the same input and output
  types and streaming flags;
- ours declares every message that the official Identity and Node services reach, and
  nothing else;
- a message with every field set, serialized from our descriptors, parses with the
  official ones into the same bytes, with no unknown fields (and the other way round).

Needs no imgvol binary and no network: only the reference spec in shared/ next to the repo.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = REPO / "csi-proto" / "csi.proto"
OFFICIAL = REPO.parent / "shared" / "reference" / "csi-spec-v1.12.0" / "csi.proto"
SERVICES = ("Identity", "Node")
PACKAGE = "csi.v1"

try:
    import grpc_tools
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError as e:  # pragma: no cover - reported as a failure below
    _IMPORT_ERROR = e
else:
    _IMPORT_ERROR = None


# --------------------------------------------------------------------------------------
# Compiling


def _compile(proto: Path, out: Path) -> descriptor_pb2.FileDescriptorSet:
    wkt = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    cmd = [sys.executable, "-m", "grpc_tools.protoc",
           f"-I{proto.parent}", f"-I{wkt}",
           "--include_imports", f"--descriptor_set_out={out}", proto.name]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=proto.parent)
    assert r.returncode == 0, f"protoc failed on {proto}:\n{r.stderr}"
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _main_file(fds: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorProto:
    [f] = [f for f in fds.file if f.name == "csi.proto"]
    return f


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    if _IMPORT_ERROR is not None:
        pytest.fail(f"grpcio-tools is needed for this test ({_IMPORT_ERROR}): "
                    f"python3 -m pip install grpcio-tools", pytrace=False)
    if not OFFICIAL.is_file():
        pytest.fail(f"official CSI v1.12.0 proto not found at {OFFICIAL}: it comes from "
                    f"shared/reference/csi-spec-v1.12.0/ beside the repo", pytrace=False)
    assert OURS.is_file(), f"{OURS} is missing"
    d = tmp_path_factory.mktemp("csi-proto")
    ours = _compile(OURS, d / "ours.pb")
    official = _compile(OFFICIAL, d / "official.pb")
    return ours, official


# --------------------------------------------------------------------------------------
# Walking descriptors


def _messages(prefix: str, msgs) -> Iterator[Tuple[str, descriptor_pb2.DescriptorProto]]:
    for m in msgs:
        name = f"{prefix}.{m.name}"
        yield name, m
        yield from _messages(name, m.nested_type)


def _all_messages(f: descriptor_pb2.FileDescriptorProto) -> Dict[str, descriptor_pb2.DescriptorProto]:
    return dict(_messages(f".{f.package}", f.message_type))


def _all_enums(f: descriptor_pb2.FileDescriptorProto) -> Dict[str, descriptor_pb2.EnumDescriptorProto]:
    enums = {f".{f.package}.{e.name}": e for e in f.enum_type}
    for name, m in _all_messages(f).items():
        for e in m.enum_type:
            enums[f"{name}.{e.name}"] = e
    return enums


def _field_key(m: descriptor_pb2.DescriptorProto, fld: descriptor_pb2.FieldDescriptorProto):
    oneof = m.oneof_decl[fld.oneof_index].name if fld.HasField("oneof_index") else None
    return (fld.name, fld.type, fld.label, fld.type_name, oneof, fld.proto3_optional)


def _fields(m: descriptor_pb2.DescriptorProto):
    return {fld.number: _field_key(m, fld) for fld in m.field}


def _type_name(t: int) -> str:
    return descriptor_pb2.FieldDescriptorProto.Type.Name(t)


def _fmt(key) -> str:
    name, typ, label, type_name, oneof, optional = key
    label = descriptor_pb2.FieldDescriptorProto.Label.Name(label)
    return (f"{label} {_type_name(typ)}{' ' + type_name if type_name else ''} {name}"
            f"{' in oneof ' + oneof if oneof else ''}{' (proto3 optional)' if optional else ''}")


# --------------------------------------------------------------------------------------
# Tests


def test_package_and_imports(compiled):
    ours, official = (_main_file(x) for x in compiled)
    assert ours.package == official.package == PACKAGE
    assert ours.syntax == official.syntax == "proto3"
    assert [s.name for s in ours.service] == list(SERVICES), "only Identity and Node belong here"
    assert not ours.extension, "the custom descriptor options are left out on purpose"


def test_every_message_matches_official(compiled):
    ours, official = (_all_messages(_main_file(x)) for x in compiled)
    assert ours, "no messages compiled from ours"
    problems = []
    for name, m in sorted(ours.items()):
        o = official.get(name)
        if o is None:
            problems.append(f"{name}: not in the official proto")
            continue
        mine, theirs = _fields(m), _fields(o)
        for num in sorted(set(mine) | set(theirs)):
            a, b = mine.get(num), theirs.get(num)
            if a is None:
                problems.append(f"{name}: field {num} {b[0]} ({_type_name(b[1])}) is missing")
            elif b is None:
                problems.append(f"{name}: field {num} {a[0]} is not in the official proto")
            elif a != b:
                problems.append(f"{name}: field {num} differs: ours {_fmt(a)}, official {_fmt(b)}")
        if m.options.map_entry != o.options.map_entry:
            problems.append(f"{name}: map_entry {m.options.map_entry} != {o.options.map_entry}")
        if sorted(x.name for x in m.oneof_decl) != sorted(x.name for x in o.oneof_decl):
            problems.append(f"{name}: oneofs differ")
    assert not problems, "\n".join(problems)


def test_every_enum_matches_official(compiled):
    ours, official = (_all_enums(_main_file(x)) for x in compiled)
    assert ours, "no enums compiled from ours"
    problems = []
    for name, e in sorted(ours.items()):
        o = official.get(name)
        if o is None:
            problems.append(f"{name}: not in the official proto")
            continue
        mine = [(v.name, v.number) for v in e.value]
        theirs = [(v.name, v.number) for v in o.value]
        if sorted(mine, key=lambda x: x[1]) != sorted(theirs, key=lambda x: x[1]):
            problems.append(f"{name}: values differ: ours {mine}, official {theirs}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service", SERVICES)
def test_service_methods_match_official(compiled, service):
    ours, official = (_main_file(x) for x in compiled)
    [s] = [s for s in ours.service if s.name == service]
    [o] = [s for s in official.service if s.name == service]

    def methods(svc):
        return {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                for m in svc.method}

    assert methods(s) == methods(o)


def test_declares_exactly_what_identity_and_node_reach(compiled):
    ours_f, official_f = (_main_file(x) for x in compiled)
    official = _all_messages(official_f)
    official_enums = _all_enums(official_f)
    reached, todo = set(), []
    for svc in official_f.service:
        if svc.name in SERVICES:
            for m in svc.method:
                todo += [m.input_type, m.output_type]
    while todo:
        name = todo.pop()
        if name in reached or name not in official:  # google.protobuf.* comes from imports
            continue
        reached.add(name)
        todo += [f.type_name for f in official[name].field if f.type_name]
        todo += [f"{name}.{n.name}" for n in official[name].nested_type]
    reached_enums = {e for e in official_enums if e.rsplit(".", 1)[0] in reached}

    ours = set(_all_messages(ours_f))
    ours_enums = set(_all_enums(ours_f))
    assert sorted(reached - ours) == [], "messages the services use but ours lacks"
    assert sorted(ours - reached) == [], "messages in ours that Identity and Node never use"
    assert sorted(reached_enums ^ ours_enums) == []


# --------------------------------------------------------------------------------------
# Bytes on the wire


def _pool(fds: descriptor_pb2.FileDescriptorSet):
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return pool


def _is_repeated(f) -> bool:
    """FieldDescriptor.label is gone in protobuf 7; is_repeated is missing before 5.29."""
    rep = getattr(f, "is_repeated", None)
    return rep if rep is not None else f.label == f.LABEL_REPEATED


def _fill(msg, depth: int = 0) -> None:
    """Set every field of msg (first member of each oneof) to a non-default value."""
    from google.protobuf.descriptor import FieldDescriptor as FD
    seen_oneofs = set()
    for i, f in enumerate(msg.DESCRIPTOR.fields):
        if f.containing_oneof is not None:
            if f.containing_oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(f.containing_oneof.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            container = getattr(msg, f.name)
            if value_field.message_type is None:
                container[f"k{i}"] = f"v{i}"
            elif depth < 4:
                _fill(container[f"k{i}"], depth + 1)
            continue
        repeated = _is_repeated(f)
        if f.message_type is not None:
            if depth >= 4:
                continue
            if repeated:
                _fill(getattr(msg, f.name).add(), depth + 1)
                _fill(getattr(msg, f.name).add(), depth + 2)
            else:
                sub = getattr(msg, f.name)
                _fill(sub, depth + 1)
                sub.SetInParent()
            continue
        if f.enum_type is not None:
            value = f.enum_type.values[-1].number
        elif f.type == FD.TYPE_BOOL:
            value = True
        elif f.type == FD.TYPE_STRING:
            value = f"{f.name}-{depth}"
        elif f.type == FD.TYPE_BYTES:
            value = b"\x00\xff"
        else:
            value = 1000003 + i
        if repeated:
            getattr(msg, f.name).extend([value, value])
        else:
            setattr(msg, f.name, value)


def _has_unknown_fields(msg) -> bool:
    from google.protobuf import unknown_fields
    if len(unknown_fields.UnknownFieldSet(msg)):
        return True
    for f, v in msg.ListFields():
        if f.message_type is None:
            continue
        if f.message_type.GetOptions().map_entry:
            values = v.values() if f.message_type.fields_by_name["value"].message_type else []
        elif _is_repeated(f):
            values = v
        else:
            values = [v]
        if any(_has_unknown_fields(x) for x in values):
            return True
    return False


def test_filled_messages_cross_parse(compiled):
    ours_fds, official_fds = compiled
    ours_pool, official_pool = _pool(ours_fds), _pool(official_fds)
    names = [n.lstrip(".") for n, m in _all_messages(_main_file(ours_fds)).items()
             if not m.options.map_entry]
    assert names
    for name in names:
        ours_cls = message_factory.GetMessageClass(ours_pool.FindMessageTypeByName(name))
        official_cls = message_factory.GetMessageClass(official_pool.FindMessageTypeByName(name))
        for src_cls, dst_cls in ((ours_cls, official_cls), (official_cls, ours_cls)):
            src = src_cls()
            _fill(src)
            wire = src.SerializeToString(deterministic=True)
            dst = dst_cls()
            dst.ParseFromString(wire)
            assert not _has_unknown_fields(dst), f"{name}: unknown fields after cross-parse"
            assert dst.SerializeToString(deterministic=True) == wire, f"{name}: bytes differ"
