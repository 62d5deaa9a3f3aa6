"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package (``make
postgres`` installs it), a temporary data directory, 127.0.0.1 only, a password, and a
stop by PID (SIGINT: PostgreSQL's fast shutdown) that waits for the process to end.

PostgreSQL refuses to run as root: when the tests run as root (CI), the server runs as
the ``postgres`` system user that the package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

from .ports import free_ports

#: the prefix of each server's temporary folder (data directory, socket, log)
POSTGRES_FOLDER = "prefixcache-pg-"


def bin_dir() -> Path | None:
    """The newest installed server's programs (``/usr/lib/postgresql/N/bin``)."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError(
                "PostgreSQL's server is not installed: run `make postgres` (Debian's "
                "postgresql package)."
            )
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix=POSTGRES_FOLDER))
        self.data = self.root / "data"
        (self.port,) = free_ports(1)  # below the ephemeral range
        self.user = "prefixcache"
        self.password = secrets.token_urlsafe(16)
        self.pid: int | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=120, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            owner = pwd.getpwnam("postgres")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def url(self, database: str = "postgres", driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its async URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.1)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
