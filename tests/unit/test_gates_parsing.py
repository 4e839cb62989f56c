"""Pure parts of the gates: JSONPath, JSON equality, error classification, message helpers."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from requeue.gates.http import JsonPathError, evaluate_json_path, is_missing, json_equals, ssl_context
from requeue.gates.result import clip, describe_network_error, format_bytes, format_ms

DOC = {"status": "ok", "checks": [{"name": "db", "ok": True}, {"name": "cgb", "ok": False}], "n": 3}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$", DOC),
        ("$.status", "ok"),
        ("$.checks[1].name", "cgb"),
        ("$.checks[0].ok", True),
        ("$.n", 3),
    ],
)
def test_json_path(path: str, value: object) -> None:
    assert evaluate_json_path(DOC, path) == value


@pytest.mark.parametrize("path", ["$.missing", "$.checks[5]", "$.status.deeper", "$.n[0]", "$.checks.name"])
def test_json_path_missing(path: str) -> None:
    assert is_missing(evaluate_json_path(DOC, path))


@pytest.mark.parametrize("path", ["status", "$..status", "$.checks[*]", "$['status']"])
def test_json_path_unsupported(path: str) -> None:
    with pytest.raises(JsonPathError):
        evaluate_json_path(DOC, path)


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [
        ("ok", "ok", True),
        ("ok", "OK", False),
        (1, 1.0, True),
        (1, True, False),
        (True, 1, False),
        (True, True, True),
        (None, None, True),
        ("1", 1, False),
        ([1, "a"], [1, "a"], True),
        ([1], [1, 2], False),
        ({"a": [True]}, {"a": [True]}, True),
        ({"a": 1}, {"a": True}, False),
    ],
)
def test_json_equals(actual: object, expected: object, equal: bool) -> None:
    assert json_equals(actual, expected) is equal


def test_network_error_classification() -> None:
    def wrapped(cause: BaseException) -> Exception:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise RuntimeError("driver says: boom") from inner
        except RuntimeError as outer:
            return outer

    assert describe_network_error(wrapped(socket.gaierror(-2, "Name or service not known"))) == (
        "cannot resolve host name (DNS)"
    )
    assert describe_network_error(wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "x"))) == (
        "connection refused"
    )
    assert describe_network_error(wrapped(OSError(errno.ECONNREFUSED, "x"))) == "connection refused"
    assert describe_network_error(wrapped(ConnectionResetError())) == "connection reset by peer"
    assert describe_network_error(wrapped(OSError(errno.EHOSTUNREACH, "x"))) == "host unreachable"
    assert describe_network_error(RuntimeError("unrelated")) is None


def test_ssl_context_rejects_garbage_and_is_cached() -> None:
    with pytest.raises(ssl.SSLError):
        ssl_context("not a certificate")
    assert ssl_context(None) is ssl_context(None)


def test_message_helpers() -> None:
    assert clip("a\n  b\tc") == "a b c"
    assert clip("x" * 600) == "x" * 511 + "…"
    assert format_ms(0.01234) == "12.3 ms"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
