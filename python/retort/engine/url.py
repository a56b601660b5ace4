"""Database URLs: parsing `postgresql://…` strings into parts and turning them into libpq params.

A URL names the database, never the pool: pool settings are arguments of `create_engine`.
Query parameters are passed through to libpq unchanged (`?host=/tmp/dir` for a Unix socket
directory, `?options=-c%20search_path%3Dfoo`, `?sslmode=require`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from retort import exc

__all__ = ["URL", "make_url"]

# backend names retort accepts, and the only driver it speaks
_POSTGRES_NAMES = frozenset({"postgresql", "postgres"})
_POSTGRES_DRIVERS = frozenset({"", "psycopg"})
_SUPPORTED = "postgresql:// or postgresql+psycopg:// (PostgreSQL through psycopg 3)"

# libpq accepts comma-separated lists for these when a parameter is repeated
_LIST_PARAMS = frozenset({"host", "hostaddr", "port"})

_SCHEME = re.compile(r"^(?P<backend>[A-Za-z][A-Za-z0-9_.-]*)(?:\+(?P<driver>[A-Za-z0-9_.-]+))?://")


@dataclass(frozen=True, slots=True)
class URL:
    """The parts of a database URL. Immutable; `set()` returns a changed copy."""

    drivername: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        drivername: str,
        username: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        query: Mapping[str, str | tuple[str, ...]] | None = None,
    ) -> URL:
        return cls(drivername, username, password, host, port, database, dict(query or {}))

    def set(self, **changes: Any) -> URL:
        """A copy with the given parts replaced (`drivername`, `username`, ..., `query`)."""
        if "query" in changes:
            changes["query"] = dict(changes["query"] or {})
        return replace(self, **changes)

    def update_query_dict(self, params: Mapping[str, str]) -> URL:
        """A copy whose query has `params` added (replacing parameters of the same name)."""
        query = dict(self.query)
        query.update(params)
        return replace(self, query=query)

    # --- parts --------------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        return self.drivername.partition("+")[0]

    @property
    def driver(self) -> str:
        return self.drivername.partition("+")[2] or "psycopg"

    # --- rendering ----------------------------------------------------------------------

    def render_as_string(self, hide_password: bool = True) -> str:
        """The URL as text; the password shows as `***` unless `hide_password=False`."""
        out = [self.drivername, "://"]
        if self.username is not None:
            out.append(quote(self.username, safe=""))
            if self.password is not None:
                out.append(":")
                out.append("***" if hide_password else quote(self.password, safe=""))
            out.append("@")
        if self.host is not None:
            out.append(f"[{self.host}]" if ":" in self.host else quote(self.host, safe=""))
        if self.port is not None:
            out.append(f":{self.port}")
        if self.database is not None:
            out.append("/" + quote(self.database, safe=""))
        if self.query:
            pairs = []
            for key in sorted(self.query):
                value = self.query[key]
                for v in (value,) if isinstance(value, str) else value:
                    pairs.append(f"{quote(key, safe='')}={quote(v, safe='/')}")
            out.append("?" + "&".join(pairs))
        return "".join(out)

    def __str__(self) -> str:
        return self.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"URL({self.render_as_string(hide_password=True)!r})"

    # --- libpq --------------------------------------------------------------------------

    def connect_kwargs(self) -> dict[str, str]:
        """libpq connection parameters (`host`, `port`, `dbname`, `user`, `password`, plus the
        query parameters, which win over the parts of the URL as they do in libpq URIs)."""
        params: dict[str, str] = {}
        if self.host:
            params["host"] = self.host
        if self.port is not None:
            params["port"] = str(self.port)
        if self.database:
            params["dbname"] = self.database
        if self.username:
            params["user"] = self.username
        if self.password:
            params["password"] = self.password
        for key, value in self.query.items():
            if isinstance(value, str):
                params[key] = value
            elif key in _LIST_PARAMS:
                params[key] = ",".join(value)
            else:
                raise exc.ArgumentError(
                    f"URL query parameter {key!r} is given {len(value)} times; libpq takes it once"
                )
        return params


def make_url(name_or_url: str | URL) -> URL:
    """Parse a database URL string; a `URL` is returned unchanged."""
    if isinstance(name_or_url, URL):
        return name_or_url
    if not isinstance(name_or_url, str):
        raise exc.ArgumentError(
            f"expected a database URL string or a URL, got {type(name_or_url).__name__}"
        )
    return _parse(name_or_url)


def _parse(text: str) -> URL:
    m = _SCHEME.match(text)
    if m is None:
        raise exc.ArgumentError(
            f"could not parse {_redact(text)!r} as a database URL; expected a URL such as "
            "postgresql://user:password@host:5432/dbname"
        )
    backend = m.group("backend").lower()
    driver = (m.group("driver") or "").lower()
    _check_supported(backend, driver)

    rest = text[m.end() :]
    rest, _, query_text = rest.partition("?")
    authority, slash, path = rest.partition("/")
    # A password may contain '/' or '@' unescaped; the last '@' ends the credentials.
    if "@" in rest:
        creds, _, tail = rest.rpartition("@")
        authority, slash, path = tail.partition("/")
    else:
        creds = None

    username = password = None
    if creds is not None:
        user_text, colon, pw_text = creds.partition(":")
        username = unquote(user_text) if user_text else None
        password = unquote(pw_text) if colon else None

    host, port = _parse_host_port(authority, text)
    database = unquote(path) if slash and path else None

    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parse_qsl(query_text, keep_blank_values=True):
        if key in query:
            prev = query[key]
            query[key] = (*((prev,) if isinstance(prev, str) else prev), value)
        else:
            query[key] = value

    return URL(m.group(0)[:-3], username, password, host, port, database, query)


def _check_supported(backend: str, driver: str) -> None:
    if backend in _POSTGRES_NAMES:
        if driver not in _POSTGRES_DRIVERS:
            raise exc.ArgumentError(
                f"driver {driver!r} is not supported: retort talks to PostgreSQL through "
                f"psycopg 3 only; use {_SUPPORTED}"
            )
        return
    if backend == "sqlite":
        raise exc.ArgumentError(
            f"SQLite support is planned for a later release and not available yet; use {_SUPPORTED}"
        )
    raise exc.ArgumentError(f"database {backend!r} is not supported; retort supports {_SUPPORTED}")


def _parse_host_port(authority: str, text: str) -> tuple[str | None, int | None]:
    if not authority:
        return None, None
    if "," in authority:
        raise exc.ArgumentError(
            f"{_redact(text)!r}: for several hosts use query parameters, "
            "e.g. ?host=h1,h2&port=5432,5433"
        )
    if authority.startswith("["):  # [IPv6]:port
        host, bracket, port_text = authority[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise exc.ArgumentError(f"{_redact(text)!r}: malformed IPv6 host {authority!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise exc.ArgumentError(f"{_redact(text)!r}: port {port_text!r} is not a valid port")
        port = int(port_text)
    return (unquote(host) if host else None), port


def _redact(text: str) -> str:
    """`text` with anything that looks like a password replaced, for error messages."""
    return re.sub(r"(://[^:/@?]*:)[^@]*@", r"\1***@", text)
