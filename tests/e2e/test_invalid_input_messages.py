"""Issue 14: bad input gets one clean line, wherever it is refused.

* A DLQReplay whose ``failedReasonPattern`` is not RE2 is refused by the API server (a CEL rule
  compiles it): kubectl's error names the field and says why in plain words: no Python bytes
  repr, no RE2 C++ log line (the stand-in validates in this process, so its stderr is ours).
* A Redis URL in a Secret with an option redis-py cannot take (``?ssl_cert_reqs=none`` on
  ``redis://``) is ``Ready=False/RedisUrlInvalid`` naming the option, not a ``TypeError``
  traceback in the operator's log.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import yaml

from support.dlqreplay import condition, operator_command, replay, secret, wait_status_async
from support.kube import Kube
from support.redis_server import free_port

pytestmark = pytest.mark.e2e

#: What must never reach a person: RE2's C++ log prefix, a Python traceback (and a bytes repr, below).
NOISE = ("re2.cc", "Error parsing", "Traceback", "TypeError")
#: A bytes repr (b'...'), not a word that ends in b before a quote (base64 in kopf's debug log).
BYTES_REPR = re.compile(r"(?<![\w+/=-])b['\"]")


def noise(text: str) -> list[str]:
    """What must not show in a clean message: library noise and bytes reprs."""
    return [n for n in NOISE if n in text] + BYTES_REPR.findall(text)


def test_an_invalid_failed_reason_pattern_is_refused_with_one_clean_line(
    kube: Kube, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest = replay("bad-pattern", "default", selector={"failedReasonPattern": "(unclosed"})
    result = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0, result.stdout
    assert "spec.selector.failedReasonPattern" in result.stderr, result.stderr
    assert result.stderr.rstrip("\n").endswith(
        "spec.selector.failedReasonPattern: Invalid value: rule evaluation error: error parsing regexp: "
        "missing ): (unclosed"
    ), result.stderr
    assert not noise(result.stderr), result.stderr
    assert kube.get("requeue.dev/v1alpha1/dlqreplays", "bad-pattern") is None
    captured = capfd.readouterr()  # the in-process API server's stderr: RE2 logs there when it fails
    assert not [n for n in ("re2.cc", "Error parsing") if n in captured.err + captured.out], captured


async def test_a_url_option_redis_py_cannot_take_is_a_clean_status_message(
    kube: Kube, operator_factory: Any
) -> None:
    url = f"redis://default:Pw-never-shown-42@127.0.0.1:{free_port()}/0?ssl_cert_reqs=none"
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": url}))
    operator = operator_factory(operator_command())
    await asyncio.to_thread(kube.kubectl.apply, replay("tls-option", "default"))
    st = await wait_status_async(
        kube,
        "tls-option",
        lambda s: condition(s, "Ready").get("reason") == "RedisUrlInvalid",
        operator=operator,
        timeout=60,
        what="Ready=False/RedisUrlInvalid",
    )
    message = condition(st, "Ready")["message"]
    assert (
        "is not a valid Redis URL: the option 'ssl_cert_reqs' is for TLS, and this URL is redis://" in message
    ), message
    assert "\n" not in message and "Pw-never-shown-42" not in message, message
    log = operator.logs()
    assert not noise(log), log[-4000:]
    assert "Pw-never-shown-42" not in log
