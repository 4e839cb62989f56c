"""``requeue demo`` end to end: a subprocess, bounded in time, that must leave no process behind.

Every process the demo starts inherits its environment, so a marker variable
set on the demo finds them all afterwards in ``/proc/*/environ`` — the
operator, redis-server, and anything they might have spawned — even those
whose parent was gone before we looked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "REQUEUE_DEMO_TEST_RUN"


def demo_env(mark: str) -> dict[str, str]:
    return {**os.environ, MARKER: mark, "PYTHONUNBUFFERED": "1", "KUBERNETES_SERVICE_HOST": ""}


def marked_processes(mark: str) -> list[str]:
    """``pid cmdline`` of every live process whose environment carries the marker."""
    found = []
    needle = f"{MARKER}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if needle in environ.split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {cmdline}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def carries_marker(pid: int, mark: str) -> bool:
    """Whether ``pid`` is alive and ours (a reused pid would not carry the marker)."""
    try:
        return f"{MARKER}={mark}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def assert_nothing_left(mark: str, output: str) -> None:
    # Reaped children can take a moment to vanish from /proc after their parent exited.
    deadline = time.monotonic() + 5
    while (left := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind by the demo: {left}\n{output}"
    for what in ("redis-server", "operator"):
        match = re.search(rf"{what} pid (\d+)", output)
        assert match, f"the demo did not say which {what} it started:\n{output}"
        assert not carries_marker(int(match[1]), mark), f"{what} pid {match[1]} is still running"
    workdir = re.search(r"removed (/\S+requeue-demo-\S+)", output)
    assert workdir, output
    assert not Path(workdir[1]).exists()


@contextmanager
def running_demo(mark: str, *args: str, sigint_ignored: bool = False) -> Iterator[subprocess.Popen[str]]:
    """``requeue demo *args`` in the background, its children marked with ``mark``, output on a
    pipe; killed on the way out if the test did not end it. ``sigint_ignored``: started as a
    script's ``&`` starts it, SIGINT ignored (``trap "" INT``, inherited through ``exec``)."""
    command = [sys.executable, "-m", "requeue", "demo", *args]
    if sigint_ignored:
        command = ["bash", "-c", 'trap "" INT; exec "$@"', "demo", *command]
    demo = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=demo_env(mark),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield demo
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def interrupt(demo: subprocess.Popen[str], signum: int) -> str:
    """Send ``signum`` (what Ctrl-C or ``kill`` does) and wait for the demo to end; the rest of its output."""
    demo.send_signal(signum)
    rest, _ = demo.communicate(timeout=60)
    return rest


def read_until(
    demo: subprocess.Popen[str], lines: list[str], stop: Callable[[str], object], what: str
) -> None:
    """Append the demo's output lines to ``lines`` up to the first that ``stop`` accepts; fail (with
    the output) when the demo ends before, naming ``what`` it should have done."""
    assert demo.stdout is not None
    for line in demo.stdout:
        lines.append(line)
        if stop(line):
            return
    pytest.fail(f"the demo ended before {what}:\n{''.join(lines)}")


@pytest.mark.timeout(240)
def test_demo_replays_the_whatsapp_jobs_and_cleans_up() -> None:
    mark = uuid.uuid4().hex
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "requeue", "demo", "--jobs", "1500"],
        cwd=REPO_ROOT,
        env=demo_env(mark),
        capture_output=True,
        text=True,
        timeout=180,
    )
    took = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Succeeded" in output

    seeded = re.search(
        r"seeded (\d+) failed BullMQ jobs .*?: "
        r"(\d+) whatsapp\.send \(429 Too Many Requests\), "
        r"(\d+) pdf\.generate \(timeout after 5012ms\), (\d+) email\.send",
        output,
    )
    assert seeded, output
    total, whatsapp, pdf, email = map(int, seeded.groups())
    assert total == 1500 == whatsapp + pdf + email
    assert whatsapp == 900
    assert re.search(rf"{total} failed jobs in", output)  # the inspect summary
    final = re.search(
        r"Succeeded: matched (\d+) of (\d+) whatsapp\.send jobs, replayed (\d+), "
        r"completed (\d+), failed again (\d+)",
        output,
    )
    assert final, output
    assert list(map(int, final.groups())) == [whatsapp, whatsapp, whatsapp, whatsapp, 0]
    assert re.search(
        rf"whatsapp-after-provider-outage\s+default\s+Succeeded\s+{whatsapp}/{whatsapp}\s", output
    ), "kubectl get dlqr output"
    assert f"Redis: {pdf + email} jobs still failed" in output
    assert f"the worker ran {whatsapp} jobs, 0 of them twice" in output  # exactly once
    for reason in ("GatesRed", "GatesPassed", "Selected", "ReplayFinished", "Verified"):
        assert reason in output, f"event {reason} missing:\n{output}"
    assert "WaitingForGates" in output and "Verifying" in output
    assert "stopped operator (exit 0), redis-server, API server emulator" in output
    assert_nothing_left(mark, output)
    print(f"demo took {took:.1f}s\n{output}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("signum", "when", "sigint_ignored"),
    [
        (signal.SIGINT, "Replaying", False),
        (signal.SIGTERM, "WaitingForGates", False),
        # started in a script's background: Python installs no KeyboardInterrupt handler then,
        # and Ctrl-C used to be ignored (the demo ran on and exited 0)
        (signal.SIGINT, "Replaying", True),
    ],
)
def test_an_interrupted_demo_stops_everything_it_started(
    signum: int, when: str, sigint_ignored: bool
) -> None:
    mark = uuid.uuid4().hex
    lines: list[str] = []
    with running_demo(mark, "--jobs", "300", sigint_ignored=sigint_ignored) as demo:
        read_until(demo, lines, lambda line: re.search(rf"\d+\.\ds {when}\b", line), f"reaching {when}")
        assert marked_processes(mark), "the demo's children should be running now"
        rest = interrupt(demo, signum)
    output = "".join(lines) + rest
    assert demo.returncode == 130, output
    assert "interrupted: stopping everything the demo started" in output
    assert_nothing_left(mark, output)


def test_without_the_demo_extra_it_says_what_to_install() -> None:
    """kmock missing (as after a plain ``pip install requeue``): exit 2 and the pip command."""
    code = "import sys; sys.modules['kmock'] = None; from requeue.cli import main; main(['demo'])"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=demo_env(uuid.uuid4().hex),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install 'requeue[demo]'" in proc.stderr
    assert "kmock" in proc.stderr


@pytest.mark.timeout(240)
def test_keep_leaves_a_cluster_to_explore_until_ctrl_c() -> None:
    mark = uuid.uuid4().hex
    lines: list[str] = []
    with running_demo(mark, "--jobs", "200", "--keep") as demo:
        # "operator log: ..." is the last line of the --keep instructions
        read_until(demo, lines, lambda line: line.startswith("operator log: "), "staying up")
        output = "".join(lines)
        kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", output, re.MULTILINE)
        assert kubeconfig, output
        got = subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig[1]}",
                "-n",
                "visapi",
                "get",
                "dlqr",
                "-o",
                "jsonpath={.items[0].status.phase}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert got.stdout == "Succeeded", got.stderr
        rest = interrupt(demo, signal.SIGINT)
    output = "".join(lines) + rest
    assert demo.returncode == 0, output  # the replay Succeeded; Ctrl-C is how --keep ends
    assert not Path(kubeconfig[1]).exists()
    assert_nothing_left(mark, output)
