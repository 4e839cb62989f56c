"""The progress line shows the gates' message only while the replay waits for them."""

from __future__ import annotations

import io

from rich.console import Console

from requeue.demo.view import ReplayView
from requeue.replay.gating import current_message

GATES_MSG = "waiting for gates (cgb-api: HTTP 503)"


def lines(*statuses: dict[str, object]) -> list[str]:
    out = io.StringIO()
    view = ReplayView(Console(file=out, force_terminal=False, width=300), "r", lambda: "  0.0s")
    for status in statuses:
        view.update(status)
    return out.getvalue().splitlines()


def test_gates_message_shown_while_waiting() -> None:
    (line,) = lines({"phase": "WaitingForGates", "message": GATES_MSG})
    assert line.endswith(f"WaitingForGates | {GATES_MSG}")


def test_gates_message_dropped_once_replaying() -> None:
    gates = [{"name": "cgb-api", "healthy": True, "consecutiveFailures": 0}]
    waiting, replaying = lines(
        {"phase": "WaitingForGates", "message": GATES_MSG},
        {"phase": "Replaying", "message": GATES_MSG, "gates": gates},
    )
    assert GATES_MSG in waiting
    assert replaying.endswith("Replaying | gates: cgb-api ok")
    assert "waiting for gates" not in replaying


def test_other_messages_kept_in_every_phase() -> None:
    assert current_message("Replaying", "replaying: 3/10") == "replaying: 3/10"
    assert current_message("Pending", GATES_MSG) == GATES_MSG
    assert current_message("Verifying", GATES_MSG) == ""
    assert current_message("Failed", "gates did not pass within 30m: x") == "gates did not pass within 30m: x"
