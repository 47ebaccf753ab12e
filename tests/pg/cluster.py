"""A throwaway PostgreSQL cluster owned by the test run, and a fresh database per test.

``SCONNECT_TEST_DATABASE_URL`` names an existing server (its user needs ``CREATEDB``);
without it, when Debian's PostgreSQL binaries are installed
(``/usr/lib/postgresql/*/bin/initdb``), :class:`Cluster` runs ``initdb`` in a temporary
directory and ``pg_ctl start`` on a free loopback port, as ``nobody`` when the run is root
(PostgreSQL refuses to run as root) and as ourselves otherwise, and stops it at the end.
Password authentication (scram) is on, so a wrong password can be tested for real.
``fsync`` is off: the cluster is thrown away, durability there proves nothing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs

ENV_URL = "SCONNECT_TEST_DATABASE_URL"
USER = "sconnect_test"
PASSWORD = "test-password-" + uuid.uuid4().hex[:12]


def find_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    if owner is None:
        return argv
    return ["setpriv", f"--reuid={owner}", f"--regid={pwd.getpwnam(owner).pw_gid}", "--clear-groups",
            "--", *argv]


@attrs.define
class Cluster:
    """Where the test databases live: an admin URL able to create and drop databases."""

    admin_url: str
    data_dir: Path | None = None
    bin_dir: Path | None = None
    owner: str | None = None
    options: str = ""

    @classmethod
    def start(cls, bin_dir: Path, *, durable: bool = False) -> Cluster:
        """``durable``: fsync on, as in production (for bench/bench_pg.py)."""
        owner = "nobody" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="sconnect-pg-", dir="/tmp"))
        data = root / "data"
        pwfile = root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        run = dict(check=True, capture_output=True, text=True, timeout=120, cwd="/")
        try:
            subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", USER,
                                      "--pwfile", str(pwfile), "--auth", "scram-sha-256",
                                      "-E", "UTF8", "--no-sync"], owner), **run)
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                       "-c max_connections=200")
            if not durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                                      "-o", options, "-w", "-t", "60", "start"], owner), **run)
        except subprocess.CalledProcessError as exc:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"could not start a test PostgreSQL: {exc.stderr}\n{log}") from None
        return cls(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres", data, bin_dir, owner, options)

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl stop`` / ``start`` on this cluster (to take the database away and back)."""
        assert self.data_dir is not None and self.bin_dir is not None, "not a cluster of ours"
        extra = ["-l", str(self.data_dir.parent / "log"), "-o", self.options] if args[0] == "start" else []
        subprocess.run(_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *extra, "-w",
                                  "-t", "60", *args], self.owner), check=True, capture_output=True, timeout=90, cwd="/")

    def stop(self) -> None:
        if self.data_dir is None or self.bin_dir is None:
            return
        subprocess.run(_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                                  "-w", "stop"], self.owner), capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url_of(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + name))
