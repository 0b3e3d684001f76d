"""A real PostgreSQL server for the database tests and the demo, started by them.

Debian's `postgresql` package provides the server binaries under
`/usr/lib/postgresql/<major>/bin` (not on PATH); the newest installed major version is used.
The server lives in a temporary directory, listens only on a free loopback port, has no Unix
socket and asks every client for a password (scram-sha-256), like a production database
reached through a DATABASE_URL. Each test gets a fresh database owned by a fresh, unprivileged
role, so that the restore and migrate-down scripts are proven with the privileges an
application's own URL has, not a superuser's.

initdb and postgres refuse to run as root, and the tests often do (CI runs as root): then the
server runs as `nobody` (65534) through `setpriv`, with its directory owned by that user.

The tests' fixtures are in tests/e2e/postgres.py.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from standins.local import UnavailableError, free_port

NOBODY = 65534
INSTALL_HINT = "install Debian's postgresql and postgresql-client (scripts/install-system-deps.sh)"


def server_bin_dir() -> Path:
    """The bin directory of the newest installed PostgreSQL major version."""
    found = sorted(
        (int(p.parent.parent.name), p.parent)
        for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if p.parent.parent.name.isdigit()
    )
    if not found:
        raise UnavailableError(f"no PostgreSQL server under /usr/lib/postgresql: {INSTALL_HINT}")
    return found[-1][1]


def client_tool(name: str) -> str:
    """A client binary (psql, pg_dump) from PATH, as the scripts under test find it."""
    path = shutil.which(name)
    if path is None:
        raise UnavailableError(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def _as_server_user() -> list[str]:
    """The command prefix that runs the server unprivileged when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise UnavailableError(
            "the tests run as root and setpriv (util-linux) is missing to drop privileges"
        )
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


@dataclass
class PostgresServer:
    """A running server: `superuser` connects as the bootstrap superuser, over TCP."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    superuser: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str, user: str | None = None, password: str | None = None) -> str:
        user = user or self.superuser
        password = password or self.password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        """Runs `sql` as the superuser; fails the test with psql's error if it fails."""
        return run_psql(self.url(database), sql)

    def create_database(self) -> Database:
        """A fresh database, owned by a fresh login role that is not a superuser."""
        suffix = secrets.token_hex(4)
        name, owner, password = f"db_{suffix}", f"app_{suffix}", secrets.token_hex(12)
        self.psql("postgres", f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        self.psql("postgres", f"CREATE DATABASE {name} OWNER {owner}")
        return Database(self, _identifier(name), _identifier(owner), password)

    def drop_database(self, db: Database) -> None:
        self.psql("postgres", f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
        self.psql("postgres", f"DROP ROLE IF EXISTS {db.owner}")


@dataclass
class Database:
    """One test's database and its owner's credentials: what an application's URL carries."""

    server: PostgresServer
    name: str
    owner: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url(self.name, self.owner, self.password)

    def psql(self, sql: str) -> str:
        """Runs `sql` as the owner (the application's role)."""
        return run_psql(self.url, sql)

    def rows(self, query: str) -> list[tuple[str, ...]]:
        """The result of `query`, every value as psql prints it (NULL as the empty string)."""
        out = run_psql(self.url, query, csv_output=True)
        return [tuple(row) for row in csv.reader(io.StringIO(out))]

    def table(self, table: str) -> list[tuple[str, ...]]:
        """Every row of a table, in a stable order: what a restore must bring back exactly."""
        return self.rows(f"SELECT * FROM {table} ORDER BY 1")

    def tables(self, schema: str = "public") -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT table_name FROM information_schema.tables "
                f"WHERE table_schema = '{_identifier(schema)}' ORDER BY 1"
            )
        ]

    def dump(self, path: Path, *extra: str) -> Path:
        """A plain-SQL pg_dump of the database, as the owner, to `path` (e.g. with --clean)."""
        subprocess.run(
            [client_tool("pg_dump"), "--no-password", "-f", str(path), *extra, self.url],
            check=True,
            capture_output=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        return path


def run_psql(url: str, sql: str, *, csv_output: bool = False) -> str:
    command = [client_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password"]
    if csv_output:
        command += ["--csv", "-t"]
    result = subprocess.run(
        [*command, "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"psql failed ({result.returncode}) on {sql!r}: {result.stderr}")
    return result.stdout


def start_server() -> PostgresServer:
    """initdb into a new temporary directory, then start the server on a free loopback port."""
    bin_dir = server_bin_dir()
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="rollback-pg-"))
    password = secrets.token_hex(16)
    (root / "pwfile").write_text(password + "\n")
    if prefix:
        for path in (root, root / "pwfile"):
            os.chown(path, NOBODY, NOBODY)
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port(), password=password)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    _run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            server.superuser,
            f"--pwfile={root / 'pwfile'}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        env,
    )
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '{server.host}'\nport = {server.port}\n"
            "unix_socket_directories = ''\nfsync = off\nfull_page_writes = off\n"
            "synchronous_commit = off\nmax_connections = 50\n"
        )
    _run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        env,
    )
    return server


def stop_server(server: PostgresServer) -> None:
    try:
        _run(
            [
                *_as_server_user(),
                str(server.bin_dir / "pg_ctl"),
                "-D",
                str(server.data_dir),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            dict(os.environ),
        )
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
