"""``requeue demo``: the whole product on a laptop with nothing else, in under a minute.

It starts the API-server emulator (the ``devcluster`` package, CRDs generated
from the models), a real redis-server, seeds a few thousand failed BullMQ jobs
of an outage with real BullMQ workers (whatsapp.send rate-limited, pdf.generate
timing out, email.send refused), shows them as ``requeue inspect`` does,
starts the operator (``requeue run --standalone -A``) as a subprocess, creates
a Secret and a DLQReplay like ``examples/replay.yaml`` (with ``kubectl`` when
it is on PATH, else through the API) whose http gate waits for the demo's own
"provider" health endpoint to recover, shows the replay live, has a real
worker complete the replayed jobs, and prints the final status and events.
Every process it started is stopped on the way out, also on Ctrl-C or error.

Needs the ``demo`` extra: ``pip install 'requeue[demo]'``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from rich.console import Console

from requeue.commands.output import make_console

__all__ = ["run_demo"]

#: Exit codes: the replay Succeeded; it did not (Failed, timed out, an error); extras missing; interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _console(color: bool) -> Console:
    if sys.stdout.isatty():
        return make_console(no_color=not color, highlight=False)
    # Logs, pipes, CI: no redraws, no colour, lines wide enough not to wrap mid-status.
    return make_console(no_color=True, width=120, highlight=False)


def run_demo(*, jobs: int = 3000, keep: bool = False, color: bool = True, timeout: float = 120.0) -> int:
    """Run the demo; returns the exit code (0 when the replay Succeeded)."""
    try:
        from requeue.demo.session import DemoOptions, DemoSession
    except ImportError as exc:
        missing = exc.name or str(exc)
        print(
            f"requeue demo needs the 'demo' extra ({missing} is not installed):\n"
            "    pip install 'requeue[demo]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    console = _console(color)
    session = DemoSession(DemoOptions(jobs=jobs, keep=keep, timeout=timeout), console)

    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # Ctrl-C and SIGTERM stop and clean up. SIGINT too is handled here, not left to Python's
        # KeyboardInterrupt: a demo started in the background of a script inherits SIGINT
        # ignored, and Python then installs no handler of its own (Ctrl-C did nothing).
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await session.main()

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        if keep and session.final_phase:  # --keep ends with Ctrl-C: the replay's outcome decides
            console.print("stopping everything the demo started", highlight=False)
            return EXIT_OK if session.final_phase == "Succeeded" else EXIT_FAILED
        console.print("interrupted: stopping everything the demo started", highlight=False)
        return EXIT_INTERRUPTED
    except Exception as exc:
        console.print(f"demo failed: {type(exc).__name__}: {exc}", highlight=False, markup=False)
        return EXIT_FAILED
    finally:
        session.cleanup()
