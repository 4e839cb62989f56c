"""Real servers the gate tests control: an HTTP(S) API, a CA made with openssl, a password-only Postgres.

Imported by ``test_gates_*.py`` (pytest puts this directory on ``sys.path``).
Nothing here mocks a protocol: the HTTP server is aiohttp on a loopback port,
the certificates come from the ``openssl`` CLI, and the password-checking
Postgres is a throw-away cluster of the machine's own PostgreSQL binaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["Certificates", "ControlledHttp", "PasswordPostgres", "make_certificates"]


class ControlledHttp:
    """An HTTP (or HTTPS) API on 127.0.0.1 whose answers the test picks by path.

    * ``/status/{code}``: that status, body ``{"status": "ok"}``
    * ``/health``: :attr:`health_status` (200 unless the test flips it)
    * ``/json``: 200 with :attr:`json_body` (the test changes it between checks)
    * ``/text``: 200 with a body that is not JSON
    * ``/slow?seconds=N``: 200 after N seconds
    * ``/big``: 200 with a 1 MiB JSON document, streamed
    * ``/redirect``: 302 to ``/status/200?token=...``
    * ``/redirect-to?url=U``: 302 to ``U``
    * ``/echo``: 200, ``{"status": "ok", "auth": <Authorization header>}``

    Every request's method, path, headers and body are kept in :attr:`requests`.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.json_body: Any = {"status": "ok", "checks": [{"name": "db", "ok": True}]}
        self.health_status = 200
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    async def start(self) -> ControlledHttp:
        app = web.Application()
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/json", self._json)
        app.router.add_route("*", "/health", self._health)
        app.router.add_route("*", "/text", self._text)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("*", "/big", self._big)
        app.router.add_route("*", "/redirect", self._redirect)
        app.router.add_route("*", "/redirect-to", self._redirect_to)
        app.router.add_route("*", "/echo", self._echo)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, request: web.Request) -> None:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": dict(request.headers),
                "body": await request.text(),
            }
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response({"status": "ok"}, status=int(request.match_info["code"]))

    async def _health(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response({"status": "ok"}, status=self.health_status)

    async def _json(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response(self.json_body)

    async def _text(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        await asyncio.sleep(float(request.query.get("seconds", "10")))
        return web.json_response({"status": "ok"})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"status": "ok", "padding": "')
        for _ in range(64):
            await response.write(b"x" * 16384)
        await response.write(b'"}')
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        raise web.HTTPFound("/status/200?token=redirect-token-123")

    async def _redirect_to(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        raise web.HTTPFound(request.query["url"])

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response({"status": "ok", "auth": request.headers.get("Authorization")})


@dataclass(frozen=True)
class Certificates:
    """A CA and a server certificate it signed for 127.0.0.1 / localhost."""

    ca_pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: Path) -> Certificates:
    """Create a throw-away CA and a server certificate with the ``openssl`` CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl CLI is needed to create test certificates: apt-get install openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=requeue test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "server.ext",
    )
    return Certificates(
        ca_pem=(directory / "ca.crt").read_text(),
        cert_file=directory / "server.crt",
        key_file=directory / "server.key",
    )


class PasswordPostgres:
    """A private PostgreSQL cluster with scram-sha-256 authentication, on a free loopback port.

    The machine's shared server trusts every connection from 127.0.0.1, so it
    cannot show a real "password authentication failed"; its configuration is
    not ours to change. This cluster is: ``initdb`` as the ``postgres`` OS user
    (initdb refuses to run as root), a password for ``postgres``, then
    ``pg_ctl start`` with the socket in the cluster's directory.
    """

    password = "correct-horse-battery"

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries (initdb) not found under /usr/lib/postgresql")
        self.bindir = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="requeue-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = 60) -> None:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> PasswordPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._as_postgres(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        )
        self._as_postgres(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"private Postgres did not listen on {self.port}: {self._log()}")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log(self) -> str:
        log = self.dir / "log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
