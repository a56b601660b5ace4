"""Database URL parsing (no database needed)."""

from __future__ import annotations

import psycopg
import pytest

from retort import exc
from retort.engine import URL, make_url


def test_full_url() -> None:
    u = make_url("postgresql://scott:tiger@db.example:5433/app")
    assert (u.drivername, u.username, u.password, u.host, u.port, u.database) == (
        "postgresql",
        "scott",
        "tiger",
        "db.example",
        5433,
        "app",
    )
    assert u.backend_name == "postgresql" and u.driver == "psycopg"
    assert u.connect_kwargs() == {
        "host": "db.example",
        "port": "5433",
        "dbname": "app",
        "user": "scott",
        "password": "tiger",
    }


@pytest.mark.parametrize(
    "text", ["postgresql+psycopg://u@h/d", "postgres://u@h/d", "POSTGRESQL://u@h/d"]
)
def test_accepted_schemes(text: str) -> None:
    assert make_url(text).connect_kwargs() == {"host": "h", "dbname": "d", "user": "u"}


def test_pgserver_socket_uri() -> None:
    u = make_url("postgresql://postgres:@/postgres?host=/tmp/xyz")
    assert u.host is None and u.password == "" and u.database == "postgres"
    assert u.connect_kwargs() == {"dbname": "postgres", "user": "postgres", "host": "/tmp/xyz"}


def test_query_parameters_pass_through_and_win() -> None:
    u = make_url("postgresql://u@h/d?options=-c%20search_path%3Dfoo&sslmode=require&host=/s")
    assert u.connect_kwargs() == {
        "host": "/s",
        "dbname": "d",
        "user": "u",
        "options": "-c search_path=foo",
        "sslmode": "require",
    }
    # libpq understands the result
    conninfo = psycopg.conninfo.make_conninfo("", **u.connect_kwargs())
    assert psycopg.conninfo.conninfo_to_dict(conninfo)["options"] == "-c search_path=foo"


def test_repeated_host_becomes_a_libpq_list() -> None:
    u = make_url("postgresql://u@/d?host=a&host=b&port=1&port=2")
    assert u.query == {"host": ("a", "b"), "port": ("1", "2")}
    assert u.connect_kwargs()["host"] == "a,b"
    assert u.connect_kwargs()["port"] == "1,2"
    with pytest.raises(exc.ArgumentError, match="given 2 times"):
        make_url("postgresql://u@/d?sslmode=a&sslmode=b").connect_kwargs()


def test_escaped_and_awkward_credentials() -> None:
    u = make_url("postgresql://me%40corp:p%40ss%2Fw:rd@h/d%20b")
    assert (u.username, u.password, u.database) == ("me@corp", "p@ss/w:rd", "d b")
    # an unescaped '@' or '/' in the password still parses: the last '@' ends the credentials
    u = make_url("postgresql://me:p@ss/w@h/d")
    assert (u.username, u.password, u.host, u.database) == ("me", "p@ss/w", "h", "d")


def test_ipv6_and_minimal_forms() -> None:
    u = make_url("postgresql://[::1]:6543/d")
    assert (u.host, u.port) == ("::1", 6543)
    u = make_url("postgresql://")
    assert u.connect_kwargs() == {}
    u = make_url("postgresql:///d")
    assert (u.host, u.database) == (None, "d")


def test_rendering_hides_password() -> None:
    u = make_url("postgresql+psycopg://scott:ti%2Fger@h:5/d?sslmode=require")
    assert str(u) == "postgresql+psycopg://scott:***@h:5/d?sslmode=require"
    assert "ti" not in repr(u)
    assert u.render_as_string(hide_password=False) == (
        "postgresql+psycopg://scott:ti%2Fger@h:5/d?sslmode=require"
    )
    assert make_url(u.render_as_string(hide_password=False)) == u


def test_url_is_immutable_and_copyable() -> None:
    u = make_url("postgresql://u@h/d")
    assert make_url(u) is u
    v = u.set(database="other").update_query_dict({"application_name": "x"})
    assert (u.database, dict(u.query)) == ("d", {})
    assert (v.database, dict(v.query)) == ("other", {"application_name": "x"})
    assert URL.create("postgresql", host="h") == make_url("postgresql://h")
    with pytest.raises(AttributeError):
        u.host = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mysql://u@h/d", "'mysql' is not supported.*postgresql://"),
        ("sqlite:///file.db", "SQLite support is planned"),
        ("sqlite://", "SQLite support is planned"),
        ("postgresql+psycopg2://u@h/d", "psycopg 3 only"),
        ("postgresql+asyncpg://u@h/d", "psycopg 3 only"),
        ("host=localhost dbname=x", "could not parse"),
        ("postgresql://h:notaport/d", "not a valid port"),
        ("postgresql://h:70000/d", "not a valid port"),
        ("postgresql://h1,h2/d", "several hosts"),
    ],
)
def test_bad_urls(text: str, message: str) -> None:
    with pytest.raises(exc.ArgumentError, match=message):
        make_url(text)


def test_error_messages_do_not_leak_passwords() -> None:
    with pytest.raises(exc.ArgumentError) as info:
        make_url("postgresql://u:secret@h:bad/d")
    assert "secret" not in str(info.value)
