"""Mistakes a user can make on the command line are refused with a named reason and exit 2, never
carried out and never reported as Succeeded; what is printed is one clean line, no secret in it."""

from __future__ import annotations

from pathlib import Path

from support.cli import cli, write_manifest
from support.redis_server import free_port


def test_an_invalid_regex_is_one_clean_line_naming_the_field(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "r.yaml", {"selector": {"failedReasonPattern": "(unclosed"}})
    res = cli("replay", "-f", str(manifest), "--redis-url", "redis://127.0.0.1:1/0")
    assert res.code == 2, res.output
    assert res.stderr == (f"requeue: invalid spec: {manifest}: invalid DLQReplay: "
                          "spec.selector.failedReasonPattern: not a valid RE2 regular expression: "
                          "missing ): (unclosed\n")
    assert res.stdout == ""


# ---------------------------------------------------------------- --redis-url


#: A password holding every character that splits a URL, as users paste them.
PASSWORD = 'Zq9/x?y#k@v:w%"\\tail'


def _no_password(text: str) -> bool:
    return not any(piece in text for piece in ("Zq9", "x?y", "k@v", "w%", "tail"))


def test_a_redis_url_that_is_not_one_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "r.yaml", {"dryRun": True})
    commands = {"replay": ("replay", "-f", str(manifest)), "inspect": ("inspect", "--queue", "default")}
    cases = {
        "notaurl": "not a URL (expected redis://",
        f"http://ops:{PASSWORD}@127.0.0.1:6379/0": "scheme 'http' is not one of redis, rediss, unix",
        f"redis://ops:{PASSWORD}@127.0.0.1:63x9/0": "the port is not a number",
    }
    for name, args in commands.items():
        for url, problem in cases.items():
            for how in ({"args": ("--redis-url", url), "env": {}},
                        {"args": (), "env": {"REQUEUE_REDIS_URL": url}}):
                res = cli(*args, *how["args"], env=how["env"])
                assert res.code == 2, (name, url, res.output)
                assert "Invalid value for '--redis-url'" in res.stderr, res.stderr
                assert problem in res.stderr, (name, url, res.stderr)
                assert "Redis unreachable" not in res.output
                assert _no_password(res.output), res.output
    # a URL that is one passes the check, whatever its password holds: then it is Redis that fails
    url = f"redis://ops:{PASSWORD}@127.0.0.1:{free_port()}/0"
    for args in commands.values():
        res = cli(*args, "--redis-url", url)
        assert res.code == 3 and "Redis unreachable" in res.stderr, res.output
        assert _no_password(res.output), res.output
