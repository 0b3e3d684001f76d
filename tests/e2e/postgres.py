"""The PostgreSQL fixtures of the database tests (the server itself is standins/postgres.py).

Test modules import the fixtures they use (their functions are named `*_fixture`, so that the
import does not clash with the test's parameter): `from tests.e2e.postgres import
database_fixture, postgres_server_fixture`; a test then asks for `database` or
`postgres_server`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from standins.postgres import Database, PostgresServer, start_server, stop_server


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, stopped and removed at the end."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(name="database")
def database_fixture(postgres_server: PostgresServer) -> Iterator[Database]:
    """A fresh database per test, with its own owner role; dropped afterwards."""
    db = postgres_server.create_database()
    yield db
    postgres_server.drop_database(db)
