"""How the demo shows a DLQReplay while it runs: a live rich panel on a terminal, change lines otherwise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from requeue.replay.gating import current_message

__all__ = ["ReplayView"]

_PHASE_STYLE = {
    "Pending": "dim",
    "WaitingForGates": "yellow",
    "Replaying": "cyan",
    "Verifying": "blue",
    "Succeeded": "bold green",
    "Failed": "bold red",
    "Suspended": "magenta",
    "Cancelled": "magenta",
}
#: Seconds between two progress lines when the output is not a terminal.
LINE_EVERY = 2.0


def _gates(status: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(name, state, last message, latency) per gate; state is ok, red or checking (not yet passed enough)."""
    out = []
    for g in status.get("gates") or []:
        state = "ok" if g.get("healthy") else "red" if g.get("consecutiveFailures") else "checking"
        out.append((g.get("name", "?"), state, str(g.get("message", "")), g.get("latencyMs")))
    return out


def _message(status: dict[str, Any]) -> str:
    """The status message, unless it is the gates' and the replay no longer waits for them."""
    return current_message(str(status.get("phase", "Pending")), str(status.get("message") or ""))


_GATE_STYLE = {"ok": "green", "red": "red", "checking": "yellow"}


class ReplayView:
    """Show the polled ``.status`` of one DLQReplay: :meth:`update` per poll, :meth:`close` at the end.

    On a terminal a ``rich.live.Live`` panel (phase, progress bar, gates,
    verification) redraws in place; otherwise (CI logs, pipes, the README) a
    line is printed when the phase, a gate or the message changes, and the
    progress at most every :data:`LINE_EVERY` seconds.
    """

    def __init__(self, console: Console, name: str, stamp: Any) -> None:
        self.console = console
        self.name = name
        self._stamp = stamp  # () -> "  12.3s" prefix, shared with the rest of the demo's output
        self._live: Live | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_progress: tuple[str, int, int] | None = None
        self._last_line_at = 0.0
        if console.is_terminal:
            self._live = Live(self._render({}), console=console, refresh_per_second=8, transient=False)
            self._live.start()

    def update(self, status: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(self._render(status))
            return
        phase = status.get("phase", "Pending")
        gates = tuple((name, state) for name, state, _, _ in _gates(status))
        key = (phase, gates, _message(status))
        progress = (phase, int(status.get("replayed", 0)), int(status.get("completed", 0)))
        now = time.monotonic()
        if key != self._last_key:
            self._last_key = key
            self._print_line(status)
        elif progress != self._last_progress and now - self._last_line_at >= LINE_EVERY:
            self._print_line(status)
        else:
            return
        self._last_progress = progress
        self._last_line_at = now

    def _print_line(self, status: dict[str, Any]) -> None:
        phase = status.get("phase", "Pending")
        parts = [f"[{_PHASE_STYLE.get(phase, '')}]{phase}[/]"]
        if status.get("matched"):
            parts.append(f"replayed {status.get('replayed', 0)}/{status['matched']}")
        if phase in ("Verifying", "Succeeded", "Failed") and status.get("replayed"):
            parts.append(
                f"completed {status.get('completed', 0)}, failed again {status.get('failedAgain', 0)}"
            )
        gates = ", ".join(f"{name} {state}" for name, state, _, _ in _gates(status))
        if gates:
            parts.append(f"gates: {gates}")
        message = _message(status)
        line = " | ".join(parts) + (f" | {message}" if message else "")
        self.console.print(f"{self._stamp()} {line}", highlight=False, soft_wrap=True)

    def _render(self, status: dict[str, Any]) -> RenderableType:
        phase = status.get("phase", "Pending")
        matched, replayed = int(status.get("matched", 0)), int(status.get("replayed", 0))
        skipped = int(status.get("skipped", 0))
        head = Text.assemble(
            (f"dlqr/{self.name} ", "bold"),
            (phase, _PHASE_STYLE.get(phase, "")),
            (f"   {self._stamp().strip()}", "dim"),
        )
        rows: list[RenderableType] = [head]
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            "replayed",
            ProgressBar(total=max(matched, 1), completed=replayed + skipped, width=40),
            f"{replayed}/{matched}" if matched else "selecting…",
        )
        if phase in ("Verifying", "Succeeded", "Failed") and replayed:
            done = int(status.get("completed", 0)) + int(status.get("failedAgain", 0))
            bar.add_row(
                "verified",
                ProgressBar(total=replayed, completed=done, width=40),
                f"{status.get('completed', 0)} completed, {status.get('failedAgain', 0)} failed again",
            )
        rows.append(bar)
        gates = Table("gate", "state", "latency", "last result", box=None, pad_edge=False)
        for name, state, message, latency in _gates(status):
            gates.add_row(
                name,
                Text(state, _GATE_STYLE[state]),
                f"{latency:.0f}ms" if isinstance(latency, (int, float)) else "",
                Text(message, overflow="ellipsis", no_wrap=True),
            )
        if status.get("gates"):
            rows.append(gates)
        if message := _message(status):
            rows.append(Text(message, "dim"))
        return Group(*rows)

    def close(self, status: dict[str, Any]) -> None:
        """Show the last status and stop redrawing."""
        if self._live is not None:
            self._live.update(self._render(status))
            self._live.stop()
            self._live = None
        elif status:
            self.update(status)  # prints only what was not shown yet
