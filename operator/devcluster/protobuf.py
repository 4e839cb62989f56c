"""Decode the protobuf bodies ``kubectl create`` sends for a few built-in kinds.

Typed kubectl commands (``kubectl create namespace``, ``create secret``,
``create configmap``) encode the object as Kubernetes protobuf
(``Content-Type: application/vnd.kubernetes.protobuf``), not JSON, and do not
fall back to JSON when refused. kmock only reads JSON, so the emulator turns
these bodies into the JSON object a real API server would have decoded.

Only the fields those commands set are read: ``metadata`` (name,
generateName, namespace, labels, annotations, finalizers) and the kind's own
data fields. Field numbers are those of k8s.io/api's ``generated.proto``.
Anything else is refused as an unsupported media type, naming the kind.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["MAGIC", "UnsupportedProtobuf", "decode_object"]

#: Every Kubernetes protobuf payload starts with these four bytes, then a runtime.Unknown.
MAGIC = b"k8s\x00"

Field = tuple[int, int, int | bytes]


class UnsupportedProtobuf(ValueError):
    """The body is not a protobuf object the emulator knows how to read."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise UnsupportedProtobuf("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[Field]:
    """``(field number, wire type, value)`` for every field of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<i", buf, pos)[0], pos + 4
        else:
            raise UnsupportedProtobuf(f"wire type {wire} of field {number}")
        yield number, wire, value


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise UnsupportedProtobuf("expected a length-delimited field")
    return value


def _str(value: int | bytes) -> str:
    return _bytes(value).decode()


def _entry(value: int | bytes) -> tuple[str, bytes]:
    """One map entry (key = 1, value = 2)."""
    key, item = "", b""
    for number, _, v in _fields(_bytes(value)):
        if number == 1:
            key = _str(v)
        elif number == 2:
            item = _bytes(v)
    return key, item


def _metadata(buf: bytes) -> dict[str, Any]:
    names = {1: "name", 2: "generateName", 3: "namespace"}
    maps = {11: "labels", 12: "annotations"}
    meta: dict[str, Any] = {}
    for number, _, value in _fields(buf):
        if number in names:
            if _str(value):  # gogo-protobuf writes unset strings as "": leave them out, as JSON does
                meta[names[number]] = _str(value)
        elif number in maps:
            key, item = _entry(value)
            meta.setdefault(maps[number], {})[key] = item.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(_str(value))
    return meta


def _string_map(target: str) -> Callable[[dict[str, Any], int | bytes], None]:
    def read(obj: dict[str, Any], value: int | bytes) -> None:
        key, item = _entry(value)
        obj.setdefault(target, {})[key] = item.decode()

    return read


def _bytes_map(target: str) -> Callable[[dict[str, Any], int | bytes], None]:
    def read(obj: dict[str, Any], value: int | bytes) -> None:
        key, item = _entry(value)
        obj.setdefault(target, {})[key] = base64.b64encode(item).decode()

    return read


def _string(target: str) -> Callable[[dict[str, Any], int | bytes], None]:
    def read(obj: dict[str, Any], value: int | bytes) -> None:
        if _str(value):
            obj[target] = _str(value)

    return read


def _bool(target: str) -> Callable[[dict[str, Any], int | bytes], None]:
    def read(obj: dict[str, Any], value: int | bytes) -> None:
        obj[target] = bool(value)

    return read


def _namespace_spec(obj: dict[str, Any], value: int | bytes) -> None:
    finalizers = [_str(v) for n, _, v in _fields(_bytes(value)) if n == 1]
    if finalizers:
        obj["spec"] = {"finalizers": finalizers}


#: (apiVersion, kind) -> field number -> reader; field 1 is always metadata.
_KINDS: dict[tuple[str, str], dict[int, Callable[[dict[str, Any], int | bytes], None]]] = {
    ("v1", "Namespace"): {2: _namespace_spec},
    ("v1", "Secret"): {
        2: _bytes_map("data"),
        3: _string("type"),
        4: _string_map("stringData"),
        5: _bool("immutable"),
    },
    ("v1", "ConfigMap"): {2: _string_map("data"), 3: _bytes_map("binaryData"), 4: _bool("immutable")},
}


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object; :class:`UnsupportedProtobuf` if not readable."""
    if not body.startswith(MAGIC):
        raise UnsupportedProtobuf("no k8s protobuf magic")
    api_version = kind = ""
    raw = b""
    for number, _, value in _fields(body[len(MAGIC) :]):
        if number == 1:  # TypeMeta
            for n, _, v in _fields(_bytes(value)):
                if n == 1:
                    api_version = _str(v)
                elif n == 2:
                    kind = _str(v)
        elif number == 2:
            raw = _bytes(value)
    readers = _KINDS.get((api_version, kind))
    if readers is None:
        raise UnsupportedProtobuf(f"{kind or 'this object'} ({api_version or '?'}) sent as protobuf")
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    for number, _, value in _fields(raw):
        if number == 1:
            obj["metadata"] = _metadata(_bytes(value))
        elif number in readers:
            readers[number](obj, value)
    return obj
