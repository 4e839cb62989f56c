"""Mistakes a user can make on the command line are refused with a named reason and exit 2, never
carried out and never reported as Succeeded; what is printed is one clean line, no secret in it."""

from __future__ import annotations

from pathlib import Path

from support.cli import cli, write_manifest


def test_an_invalid_regex_is_one_clean_line_naming_the_field(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "r.yaml", {"selector": {"failedReasonPattern": "(unclosed"}})
    res = cli("replay", "-f", str(manifest), "--redis-url", "redis://127.0.0.1:1/0")
    assert res.code == 2, res.output
    assert res.stderr == (f"requeue: invalid spec: {manifest}: invalid DLQReplay: "
                          "spec.selector.failedReasonPattern: not a valid RE2 regular expression: "
                          "missing ): (unclosed\n")
    assert res.stdout == ""
