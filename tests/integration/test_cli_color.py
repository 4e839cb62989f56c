"""``--no-color`` on every command and ``NO_COLOR`` honoured: forced onto a terminal (rich's
``FORCE_COLOR``), the CLI writes colour unless told not to, and then no colour or style escapes."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from requeue.cli import main
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import cli, write_manifest

#: An SGR sequence: colour, bold, dim (what NO_COLOR is about; cursor moves of a progress bar are not).
SGR = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "NO_COLOR": ""}
#: The two ways to say "no colour": (extra arguments, environment).
NO_COLOUR = ((("--no-color",), TERMINAL), ((), {**TERMINAL, "NO_COLOR": "1"}))


def leaf_commands(group: click.Group, path: list[str]) -> list[list[str]]:
    """Every command that runs (``replays list``, not the ``replays`` group), as its argv path."""
    found: list[list[str]] = []
    with click.Context(group) as ctx:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                found += leaf_commands(command, [*path, name])
            elif command is not None:
                found.append([*path, name])
    return found


def test_every_command_takes_no_color(tmp_path: Path) -> None:
    runner = CliRunner()
    for path in leaf_commands(main, []):
        res = runner.invoke(main, [*path, "--help"])
        assert res.exit_code == 0 and "--no-color" in res.output, (path, res.output)
    res = runner.invoke(main, ["crds", "--no-color", "--check", "--dir", str(tmp_path / "crds")])
    assert res.exit_code == 1 and "stale:" in res.output, res.output  # parsed; nothing written


async def test_inspect_tables_have_colour_on_a_terminal_unless_told_not_to(redis_url: str) -> None:
    await make_failed_jobs(
        redis_url, "default", [JobSpec(name="email.send", data={"i": i}, reason="boom") for i in range(3)]
    )
    args = ("inspect", "--queue", "default", "--redis-url", redis_url, "-o", "table")
    coloured = cli(*args, env=TERMINAL)
    assert coloured.code == 0 and SGR.search(coloured.stdout), coloured.output
    for extra, env in NO_COLOUR:
        res = cli(*args, *extra, env=env)
        assert res.code == 0 and "email.send" in res.stdout, res.output
        assert "\x1b" not in res.output, (extra, env, res.output)


async def test_replay_progress_on_a_terminal_has_no_colour_when_told_not_to(
    redis_url: str, tmp_path: Path
) -> None:
    await make_failed_jobs(
        redis_url, "default", [JobSpec(name="email.send", data={"i": i}, reason="boom") for i in range(3)]
    )
    for n, (extra, env) in enumerate(NO_COLOUR):
        manifest = write_manifest(tmp_path / f"r{n}.yaml", {"dryRun": True}, name=f"r{n}")
        res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, *extra, env=env)
        assert res.code == 0 and "would replay 3 jobs" in res.stdout, res.output
        assert "\x1b" in res.stderr, "forced onto a terminal: the live progress display is on"
        assert not SGR.search(res.output), (extra, env, res.output)
    manifest = write_manifest(tmp_path / "coloured.yaml", {"dryRun": True}, name="coloured")
    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, env=TERMINAL)
    assert res.code == 0 and SGR.search(res.stderr), res.output
