"""A minimal kopf operator proving kopf works against the emulator (see tests/e2e/test_emulator.py).

Run as ``kopf run --standalone -A tests/support/probe_operator.py``. On
creation it writes ``status.phase``; its deletion handler makes kopf put a
finalizer on every object, so deletion exercises ``deletionTimestamp`` and
finalizer removal; it also posts an Event through kopf.
"""

from __future__ import annotations

from typing import Any

import kopf

GROUP, VERSION, PLURAL = "test.requeue.dev", "v1", "widgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 0  # post DEBUG+ events too (kopf.info below is INFO anyway)
    settings.watching.connect_timeout = 5
    settings.persistence.finalizer = "probe.test.requeue.dev/finalizer"


@kopf.on.create(GROUP, VERSION, PLURAL, retries=3, backoff=0.5, timeout=30)
def created(spec: kopf.Spec, patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
    patch.status["phase"] = "Ready"
    patch.status["size"] = spec.get("size", 0)
    kopf.info(body, reason="Probed", message=f"size is {spec.get('size', 0)}")


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=3, backoff=0.5, timeout=30)
def deleted(**_: Any) -> None:
    pass
