"""The operator as a real subprocess, pointed at the emulator through ``KUBECONFIG``.

A subprocess, not an in-process ``KopfRunner``: tests kill it mid-flight
(SIGKILL, like an OOM-killed pod) and start it again, which is what the
"handlers may be killed at any line" principle has to survive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from support import wait_until

__all__ = ["DEFAULT_COMMAND", "OperatorProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``requeue run`` is kopf underneath: standalone (no peering), all namespaces.
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "requeue", "run", "--standalone", "-A")


class OperatorProcess:
    """One operator subprocess with its log file; ``start``/``kill``/``restart``/``stop``.

    All runs append to the same log file, separated by a ``=== start N ===``
    line, so a restart's logs can be told from the first run's.
    """

    def __init__(
        self,
        kubeconfig: Path | str,
        log_path: Path,
        *,
        command: Sequence[str] = DEFAULT_COMMAND,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.command = list(command)
        self.kubeconfig = Path(kubeconfig)
        self.log_path = log_path
        self.cwd = cwd
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            # Never inherit an in-cluster config or a developer's real cluster.
            "KUBERNETES_SERVICE_HOST": "",
            **(env or {}),
        }
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> OperatorProcess:
        if self.running:
            raise RuntimeError(f"operator already running (pid {self.pid})")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== start {self.starts}: {' '.join(self.command)} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, no finalizer removal — a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (kopf's graceful shutdown), SIGKILL if still alive after ``timeout``."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._proc.returncode

    def restart(self, *, graceful: bool = False) -> OperatorProcess:
        """Kill (or stop, if ``graceful``) and start again with the same command and log."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def logs(self, *, current_run_only: bool = False) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if current_run_only:
            marker = f"=== start {self.starts}:"
            text = text[text.rfind(marker) :] if marker in text else text
        return text

    def wait_for_log(
        self, pattern: str, *, timeout: float = 30.0, current_run_only: bool = True
    ) -> re.Match[str]:
        """Wait until the log matches ``pattern`` (a regex); fail with the log tail if not."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:  # wait_until returns only a truthy (matched) value
            if not self.running and self.returncode is not None:
                raise AssertionError(
                    f"operator exited with {self.returncode} while waiting for {pattern!r}:\n"
                    f"{self.logs()[-4000:]}"
                )
            return regex.search(self.logs(current_run_only=current_run_only))

        match = wait_until(
            found, timeout=timeout, message=lambda: f"log line {pattern!r}; log tail:\n{self.logs()[-4000:]}"
        )
        assert match is not None
        return match

    def __repr__(self) -> str:
        return f"OperatorProcess(pid={self.pid}, running={self.running}, log={self.log_path})"
