"""The condition reasons are one vocabulary (requeue.api.conditions): the docs, the README and the
error classes name only reasons that exist, and each error class is named after its reason."""

from __future__ import annotations

import re
from pathlib import Path

from requeue import errors
from requeue.api.conditions import REASON_DOCS, Reason
from requeue.api.docs import render_reference
from requeue.gates.destinations import DestinationDenied
from requeue.k8s.client import KubernetesApiError

ROOT = Path(__file__).resolve().parents[2]
#: Bases of the error tree: abstract, their reason is the generic fallback of their branch.
_BASES = {errors.RequeueError, errors.PermanentError, errors.TransientError}


def troubleshooting_reasons(readme: str) -> list[str]:
    """The reasons named in the first column of the README's troubleshooting table."""
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += re.findall(r"`([A-Za-z]+)`", first)
    return names


def test_every_reason_is_documented() -> None:
    assert set(REASON_DOCS) == set(Reason)
    assert all(text.strip() for text in REASON_DOCS.values())


def test_the_reference_lists_every_reason() -> None:
    page = render_reference()
    for reason in Reason:
        assert f"| `{reason.value}` |" in page


def test_the_readme_names_only_reasons_that_exist() -> None:
    names = troubleshooting_reasons((ROOT / "README.md").read_text())
    assert len(names) > 10  # the table was found
    unknown = sorted(set(names) - {r.value for r in Reason})
    assert unknown == [], f"README troubleshooting names reasons requeue never writes: {unknown}"


def test_the_parser_catches_a_made_up_reason() -> None:
    readme = "## Troubleshooting\n\n| reason | x |\n|---|---|\n| `NoSuchReason` | y |\n\n## Next\n"
    assert troubleshooting_reasons(readme) == ["NoSuchReason"]


def test_each_error_class_is_named_after_its_reason() -> None:
    classes: list[type[errors.RequeueError] | type[DestinationDenied]] = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.RequeueError) and c not in _BASES
    ]
    classes += [KubernetesApiError, DestinationDenied]
    assert errors.RedisUnreachable in classes
    for cls in classes:
        assert isinstance(cls.reason, Reason)
        assert cls.reason.value == cls.__name__, cls


def test_the_former_name_of_redis_unreachable_still_imports() -> None:
    assert errors.RedisUnavailable is errors.RedisUnreachable
    assert errors.RedisUnreachable.reason == "RedisUnreachable"
