"""The CLI's Redis TLS settings and database, from the environment only.

``kubectl requeue inspect --from`` reads an object's ``spec.redis`` (its URL, ``db``, and the
``tls`` CA bundle and client certificate from Secrets) and hands them to the CLI here, as it
hands the URL over in ``REQUEUE_REDIS_URL``: never on a command line (``ps`` shows argv to
every user of the machine), never printed. A person can set them too, e.g. for a ``rediss://``
Redis with a private CA::

    REQUEUE_REDIS_TLS_CA="$(cat ca.pem)" requeue inspect --queue q

The values are PEM text, not file names, so the plugin writes no file of its own. They apply to
``rediss://`` URLs only (:meth:`requeue.queues.TlsOptions.client_kwargs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from requeue.errors import SpecInvalid
from requeue.queues import QueueKeys, connect

__all__ = ["ENV_CA", "ENV_CERT", "ENV_DB", "ENV_INSECURE", "ENV_KEY", "cli_connect", "connect_options"]

#: PEM CA bundle to verify the server with.
ENV_CA = "REQUEUE_REDIS_TLS_CA"
#: PEM client certificate, for a server that asks (``tls-auth-clients``); with :data:`ENV_KEY`.
ENV_CERT = "REQUEUE_REDIS_TLS_CERT"
#: PEM private key of :data:`ENV_CERT`.
ENV_KEY = "REQUEUE_REDIS_TLS_KEY"
#: ``1``/``true``: do not verify the server certificate (testing only).
ENV_INSECURE = "REQUEUE_REDIS_TLS_INSECURE_SKIP_VERIFY"
#: Database number; overrides the URL's (``spec.redis.db``).
ENV_DB = "REQUEUE_REDIS_DB"


def connect_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for :func:`requeue.queues.connect` from the environment.

    :raises SpecInvalid: a certificate without its key (or the reverse), or a database that is
        not a number from 0 to 1023; the message names the variable, never its value.
    """
    env = os.environ if env is None else env
    cert, key = env.get(ENV_CERT) or None, env.get(ENV_KEY) or None
    if (cert is None) != (key is None):
        raise SpecInvalid(f"{ENV_CERT} and {ENV_KEY} go together: a client certificate needs its key")
    out: dict[str, Any] = {
        "tls_ca_pem": env.get(ENV_CA) or None,
        "tls_cert_pem": cert,
        "tls_key_pem": key,
        "tls_insecure_skip_verify": (env.get(ENV_INSECURE) or "").strip().lower() in ("1", "true", "yes"),
    }
    db = (env.get(ENV_DB) or "").strip()
    if db:
        if not (db.isascii() and db.isdigit() and len(db) <= 4 and int(db) <= 1023):
            raise SpecInvalid(f"{ENV_DB} must be a database number from 0 to 1023")
        out["db"] = int(db)
    return out


async def cli_connect(url: str, *, queues: Sequence[QueueKeys] = ()) -> Redis:
    """:func:`requeue.queues.connect` with the environment's TLS settings and database."""
    return await connect(url, queues=queues, **connect_options())
