"""A real PgBouncer (Debian's `pgbouncer` package) in front of the test server, for the
topology tests: started once per session and mode, on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
CONFIG = """[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = any
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 1000
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits,options,search_path
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""


def available() -> bool:
    return Path(BINARY).is_file()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PgBouncer:
    """A running PgBouncer; `dsn(database)` reaches `database` through it."""

    mode: str
    port: int
    user: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def dsn(self, database: str, *, say_pooler: bool = True) -> str:
        query = f"?pooler={self.mode}" if say_pooler else ""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}{query}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(server_dsn: str, mode: str, workdir: Path) -> PgBouncer:
    """PgBouncer in `mode` ("session" or "transaction") for the server of `server_dsn`.
    As root it runs as the owner of the server's socket directory (PgBouncer refuses
    root), or as nobody for a server over TCP."""
    url = urlsplit(server_dsn)
    query = parse_qs(url.query)
    host = query.get("host", [url.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [url.port or 5432])[0])
    user = url.username or "postgres"
    listen_port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "pgbouncer.ini"
    config.write_text(
        CONFIG.format(
            host=host,
            port=port,
            user=user,
            listen_port=listen_port,
            mode=mode,
            workdir=workdir,
            # Transaction mode shares few server connections between many clients; a
            # session holds its own for as long as the client connection lives.
            pool_size=4 if mode == "transaction" else 60,
        )
    )
    argv = [BINARY]
    if os.geteuid() == 0:
        owner = Path(host).stat().st_uid if host.startswith("/") else 65534  # nobody
        shutil.chown(workdir, user=owner)
        for path in workdir.iterdir():
            shutil.chown(path, user=owner)
        workdir.chmod(0o755)
        argv += ["-u", str(_user_name(owner))]
    process = subprocess.Popen(  # noqa: S603 - our own binary and config
        [*argv, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (
                (workdir / "pgbouncer.log").read_text()
                if (workdir / "pgbouncer.log").exists()
                else ""
            )
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {log[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", listen_port)) == 0:
                return PgBouncer(mode, listen_port, user, process, workdir)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("pgbouncer did not start listening within 10 s")


def _user_name(uid: int) -> str:
    import pwd  # noqa: PLC0415 - POSIX only

    return pwd.getpwuid(uid).pw_name


async def wait_for(predicate: object, seconds: float = 5.0) -> None:
    """Poll `predicate()` (a coroutine function) until it is true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")
