"""The public API of requeue.policy, pinned (like httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import types

import requeue.policy


def test_exported_members() -> None:
    exported = set(requeue.policy.__all__)
    public = {name for name in dir(requeue.policy) if not name.startswith("_")}
    # submodules appear on the package once anything imported them (decide, collect and
    # evaluate are the functions: they shadow their modules)
    modules = {name for name in public if isinstance(getattr(requeue.policy, name), types.ModuleType)}
    assert "actions" in modules
    assert exported == public - modules
    assert callable(requeue.policy.decide) and callable(requeue.policy.evaluate)
    assert requeue.policy.__all__ == sorted(requeue.policy.__all__, key=lambda n: (not n[0].isupper(), n))
