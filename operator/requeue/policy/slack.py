"""Slack alerts: one message per evaluation with every breach and recovery, rate-limited.

The webhook URL is a secret (anyone holding it can post to the channel): it is
read from the Secret on each send (so a rotated Secret takes effect), and it
never appears in logs, Events, status or exceptions.

Rate limit: at most one POST per ``min_interval`` seconds, and none before a
``Retry-After`` the webhook answered with. Alerts that arrive while limited
are kept (at most ``max_pending`` lines; older ones are summarised as "and N
more") and go out with the next allowed message, so a flapping queue cannot
flood the channel and no breach is silently lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import httpx

from requeue.api.base import SecretKeyRef
from requeue.errors import TransientError
from requeue.policy.actions import Alert, Recover
from requeue.redact import redact_text
from requeue.secrets import SecretSource

__all__ = ["SlackNotifier", "format_line", "hide_from_http_logs"]

logger = logging.getLogger(__name__)


class _RedactSecrets(logging.Filter):
    """Redacts webhook URLs from records of httpx/httpcore, which log request URLs at INFO."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            redacted = redact_text(message, sorted(self.secrets, key=len, reverse=True))
            for secret in self.secrets:
                redacted = redacted.replace(secret, "***")
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


_FILTER = _RedactSecrets()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_FILTER)


def hide_from_http_logs(url: str) -> None:
    """Redact ``url`` (a webhook, a secret) from what httpx and httpcore log from now on."""
    _FILTER.secrets.add(url)


def format_line(item: Alert | Recover) -> str:
    """One line of the message, e.g. ``:red_circle: default: failed 150 > 100``."""
    if isinstance(item, Alert):
        icon = ":repeat:" if item.repeat else ":red_circle:"
        prefix = "still " if item.repeat else ""
        return f"{icon} *{item.queue}*: {prefix}{item.message}"
    return f":large_green_circle: *{item.queue}*: {item.message}"


class SlackNotifier:
    """Posts ``{"text": ...}`` to a Slack incoming webhook.

    :param secrets: resolves ``ref`` to the webhook URL.
    :param min_interval: seconds between two POSTs.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        secrets: SecretSource,
        ref: SecretKeyRef,
        *,
        client: httpx.AsyncClient | None = None,
        min_interval: float = 10.0,
        timeout: float = 5.0,
        max_pending: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self._ref = ref
        self._client = client
        self._timeout = timeout
        self.min_interval = min_interval
        self.max_pending = max_pending
        self._clock = clock
        self._pending: list[str] = []
        self._dropped = 0
        self._next_allowed = float("-inf")
        #: POSTs answered 2xx.
        self.sent = 0

    @property
    def pending(self) -> int:
        """Lines waiting for the next allowed message."""
        return len(self._pending) + self._dropped

    async def notify(self, policy: str, items: Sequence[Alert | Recover]) -> bool:
        """Queue ``items`` and send if the rate limit allows; True when a message went out.

        :raises TransientError: the webhook failed (message redacted); the lines stay queued.
        """
        for item in items:
            self._pending.append(format_line(item))
        if len(self._pending) > self.max_pending:
            self._dropped += len(self._pending) - self.max_pending
            self._pending = self._pending[-self.max_pending :]
        return await self.flush(policy)

    async def flush(self, policy: str) -> bool:
        """Send what is queued, if anything is and the rate limit allows."""
        if not self._pending and not self._dropped:
            return False
        now = self._clock()
        if now < self._next_allowed:
            return False
        lines = list(self._pending)
        if self._dropped:
            lines.append(f"... and {self._dropped} earlier line(s) not shown")
        text = f"*requeue* QueuePolicy `{policy}`\n" + "\n".join(lines)
        url = await self._secrets.get(self._ref)
        _FILTER.secrets.add(url)
        self._next_allowed = now + self.min_interval
        try:
            response = await self._post(url, {"text": text})
        except httpx.HTTPError as exc:
            raise TransientError(
                f"Slack webhook (secret {self._ref.name}/{self._ref.key}) failed: "
                f"{redact_text(f'{type(exc).__name__}: {exc}', [url])}"
            ) from None
        if response.status_code == 429:
            retry_after = _seconds(response.headers.get("retry-after"))
            self._next_allowed = now + max(self.min_interval, retry_after)
            raise TransientError(
                f"Slack webhook rate-limited us; retrying after {retry_after:g}s", delay=retry_after
            )
        if response.status_code >= 300:
            raise TransientError(
                f"Slack webhook (secret {self._ref.name}/{self._ref.key}) answered "
                f"{response.status_code}: {redact_text(response.text[:200], [url])}"
            )
        self._pending.clear()
        self._dropped = 0
        self.sent += 1
        logger.info("sent a Slack message for policy %s (%d line(s))", policy, len(lines))
        return True

    async def _post(self, url: str, payload: dict[str, str]) -> httpx.Response:
        if self._client is not None:
            return await self._client.post(url, json=payload, timeout=self._timeout)
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            return await client.post(url, json=payload)


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
