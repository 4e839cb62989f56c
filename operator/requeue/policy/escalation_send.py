"""Sending escalation messages: one POST of ``{"text": ...}`` per channel and change of level.

Separate from :class:`~requeue.policy.slack.SlackNotifier`, which batches and rate-limits
threshold alerts for one channel: escalation messages are rare by construction (a level
changes at most once per ``holdFor``), each channel has its own webhook, and a message
must reach its channel in the evaluation that changed the level. The URL is a secret,
read from its Secret on each send and never logged, put in an Event, status or error.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from requeue.api.base import SecretKeyRef
from requeue.errors import TransientError
from requeue.policy.slack import hide_from_http_logs
from requeue.redact import redact_text
from requeue.secrets import SecretSource

__all__ = ["EscalationSender", "WebhookSender"]


class EscalationSender(Protocol):
    """Posts one message to the webhook a Secret key holds."""

    async def send(self, ref: SecretKeyRef, text: str) -> None: ...


class WebhookSender:
    """:class:`EscalationSender` over httpx: a Slack-compatible incoming webhook (``{"text": ...}``)."""

    def __init__(self, secrets: SecretSource, *, timeout: float = 5.0) -> None:
        self._secrets = secrets
        self._timeout = timeout

    async def send(self, ref: SecretKeyRef, text: str) -> None:
        """Post ``text``; :raises TransientError: the webhook failed or refused (message redacted)."""
        url = await self._secrets.get(ref)
        hide_from_http_logs(url)
        where = f"escalation webhook (secret {ref.name}/{ref.key})"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                response = await client.post(url, json={"text": text})
        except httpx.HTTPError as exc:
            raise TransientError(
                f"{where} failed: {redact_text(f'{type(exc).__name__}: {exc}', [url])}"
            ) from None
        if response.status_code >= 300:
            raise TransientError(
                f"{where} answered {response.status_code}: {redact_text(response.text[:200], [url])}"
            )
