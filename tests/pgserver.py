"""A throwaway PostgreSQL cluster for the tests: real server, unix socket, no TCP port.

``SMPP_BRIDGE_TEST_PG_URL`` points the tests at an existing server instead (each test
still gets a database of its own). Otherwise the Debian binaries under
``/usr/lib/postgresql/<version>/bin`` start a cluster in a temporary folder, as the
``postgres`` user when the tests run as root (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

__all__ = ["PgServer", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgServer:
    """One cluster for a test session; ``new_database()`` gives each test its own database."""

    def __init__(self) -> None:
        self._external = os.environ.get("SMPP_BRIDGE_TEST_PG_URL")
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._as: list[str] = []
        self.base_url = self._external or ""

    def start(self) -> PgServer:
        if self._external:
            return self
        self._bin = find_pg_bin()
        if self._bin is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql-15)")
        self._dir = Path(tempfile.mkdtemp(prefix="smpp-bridge-pg-"))
        data, sock = self._dir / "data", self._dir / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self._dir, "postgres")
            shutil.chown(sock, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        # Durability of the test server itself is not under test (its process is never
        # killed): skip its fsyncs so the suite stays fast.
        self._run("pg_ctl", "-D", str(data), "-l", str(self._dir / "server.log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses='' -k {sock} -c fsync=off -c full_page_writes=off"
                  " -c max_connections=200 -c shared_buffers=64MB", "start")
        self.base_url = f"postgresql://postgres@/postgres?host={sock}"
        return self

    def _run(self, tool: str, *args: str) -> None:
        assert self._bin is not None
        subprocess.run([*self._as, str(self._bin / tool), *args], check=True, capture_output=True, timeout=120)

    def url_for(self, dbname: str) -> str:
        head, _, query = self.base_url.partition("?")
        head = head.rsplit("/", 1)[0] + "/" + dbname
        return f"{head}?{query}" if query else head

    def new_database(self) -> str:
        """A fresh, empty namespace (a schema of its own, first on the search path); its URL.

        A schema costs milliseconds where CREATE DATABASE costs a few hundred; to the
        bridge it is the same empty database.
        """
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self._external or self._dir is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._dir, ignore_errors=True)
