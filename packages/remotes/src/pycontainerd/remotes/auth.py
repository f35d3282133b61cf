"""Registry authentication: ``WWW-Authenticate`` challenges, Bearer tokens and Basic auth.

A registry answers an unauthenticated request with ``401`` and a challenge:
``Basic realm="..."`` or ``Bearer realm="<token url>",service="...",scope="..."``.
For Basic the credentials go on every request. For Bearer a token is fetched
from the realm (``GET realm?service=...&scope=...``, with the credentials as
Basic auth when there are any, anonymously otherwise) and sent as
``Authorization: Bearer <token>``; tokens are cached per host and scope set.
This is the Docker token protocol containerd's ``docker.Authorizer`` speaks.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeAlias

from pycontainerd.core.errdefs import UnauthenticatedError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pycontainerd.remotes._client import Client
    from pycontainerd.remotes._http import Response

Credentials: TypeAlias = Callable[
    [str], "tuple[str, str] | Awaitable[tuple[str, str] | None] | None"
]
"""``host -> (username, secret)`` or ``None`` (anonymous); may be a coroutine function
(the Transfer service asks the client through a stream)."""

log = logging.getLogger(__name__)

_PARAM: Final = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
_DEFAULT_TOKEN_TTL: Final = 60.0


@dataclass(frozen=True, slots=True)
class Challenge:
    """One auth challenge: the scheme (lower-case) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (several challenges may share one value)."""
    out: list[Challenge] = []
    for value in values:
        rest = value.strip()
        while rest:
            rest = rest.lstrip(" \t,")
            m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)", rest)
            if m is None:
                break
            scheme = m.group(1).lower()
            rest = rest[m.end() :]
            params: dict[str, str] = {}
            while rest:
                rest = rest.lstrip()
                pm = _PARAM.match(rest)
                if pm is None or re.match(r"[A-Za-z][A-Za-z0-9_-]*\s+[A-Za-z0-9_.-]+\s*=", rest):
                    break
                raw = pm.group(2)
                params[pm.group(1).lower()] = (
                    re.sub(r"\\(.)", r"\1", raw) if raw is not None else pm.group(3)
                )
                rest = rest[pm.end() :]
            out.append(Challenge(scheme, params))
    return out


def basic_header(username: str, secret: str) -> str:
    """``Basic <base64(user:secret)>``."""
    raw = f"{username}:{secret}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass(slots=True)
class _Token:
    value: str
    expires: float


@dataclass(slots=True)
class _HostAuth:
    challenge: Challenge | None = None
    tokens: dict[tuple[str, ...], _Token] = field(default_factory=dict)


class Authorizer:
    """Remembers each host's challenge and hands out ``Authorization`` headers.

    Args:
        credentials: returns ``(username, secret)`` for a host, or ``None``.
    """

    def __init__(self, credentials: Credentials | None = None) -> None:
        self._credentials = credentials
        self._hosts: dict[str, _HostAuth] = {}
        self._lock = asyncio.Lock()

    async def credentials(self, host: str) -> tuple[str, str] | None:
        """The credentials for ``host``, if any (the callback may be a coroutine function)."""
        if self._credentials is None:
            return None
        found = self._credentials(host)
        if inspect.isawaitable(found):
            return await found
        return found

    async def authorization(self, client: Client, host: str, scopes: Iterable[str]) -> str | None:
        """The ``Authorization`` value for a request to ``host``, or ``None``.

        Only hosts that challenged before get one, as upstream: the first
        request to a host goes out anonymously.
        """
        state = self._hosts.get(host)
        if state is None or state.challenge is None:
            return None
        if state.challenge.scheme == "basic":
            creds = await self.credentials(host)
            return basic_header(*creds) if creds else None
        if state.challenge.scheme == "bearer":
            return "Bearer " + await self._token(client, host, state, tuple(sorted(set(scopes))))
        return None

    async def challenged(
        self, client: Client, host: str, response: Response, scopes: Iterable[str]
    ) -> str:
        """Take a ``401`` answer's challenge; return the header to retry with.

        Raises:
            UnauthenticatedError: no usable challenge, no credentials for Basic
                auth, or the token server refused.
        """
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            msg = f"{host}: unauthorized and no supported authentication challenge"
            raise UnauthenticatedError(msg)
        state = self._hosts.setdefault(host, _HostAuth())
        state.challenge = chosen
        # What the refused request carried: an anonymous request sent before a
        # concurrent one learnt the challenge is no sign of bad credentials.
        sent = _sent_authorization(response)
        scope_set = set(scopes)
        if chosen.scheme == "basic":
            creds = await self.credentials(host)
            if creds is None:
                msg = f"{host}: authorization required (basic auth); no credentials given"
                raise UnauthenticatedError(msg)
            if sent.lower().startswith("basic "):
                msg = f"{host}: authorization failed for user {creds[0]!r}"
                raise UnauthenticatedError(msg)
            return basic_header(*creds)
        if chosen.params.get("scope"):
            scope_set.update(chosen.params["scope"].split(" "))
        key = tuple(sorted(scope_set))
        cached = state.tokens.get(key)
        if cached is not None and sent == f"Bearer {cached.value}":
            # the token we sent was refused: do not loop on it
            del state.tokens[key]
            msg = f"{host}: token rejected for scope {' '.join(key)}"
            raise UnauthenticatedError(msg)
        return "Bearer " + await self._token(client, host, state, key)

    async def _token(
        self, client: Client, host: str, state: _HostAuth, scopes: tuple[str, ...]
    ) -> str:
        async with self._lock:
            cached = state.tokens.get(scopes)
            if cached is not None and cached.expires > time.monotonic():
                return cached.value
            assert state.challenge is not None  # noqa: S101 - set by challenged()
            token, ttl = await self._fetch_token(client, host, state.challenge, scopes)
            state.tokens[scopes] = _Token(token, time.monotonic() + max(ttl - 5.0, 1.0))
            return token

    async def _fetch_token(
        self, client: Client, host: str, challenge: Challenge, scopes: tuple[str, ...]
    ) -> tuple[str, float]:
        from pycontainerd.remotes._http import HTTPError

        realm = challenge.params.get("realm")
        if not realm:
            msg = f"{host}: bearer challenge without a realm"
            raise UnauthenticatedError(msg)
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params += [("scope", s) for s in scopes]
        headers = {}
        creds = await self.credentials(host)
        if creds is not None:
            headers["Authorization"] = basic_header(*creds)
        log.debug("fetching token from %s for %s", realm, " ".join(scopes))
        try:
            resp = await client.get(realm, params=params, headers=headers)
        except HTTPError as exc:
            msg = f"{host}: fetching token from {realm}: {exc}"
            raise UnauthenticatedError(msg) from None
        if resp.status_code != 200:
            who = f"user {creds[0]!r}" if creds else "anonymous access"
            status = f"{resp.status_code} {resp.reason_phrase}"
            msg = f"{host}: token server {realm} refused {who}: {status}"
            raise UnauthenticatedError(msg)
        try:
            body = resp.json()
        except ValueError:
            msg = f"{host}: token server {realm} sent no JSON"
            raise UnauthenticatedError(msg) from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            msg = f"{host}: token server {realm} sent no token"
            raise UnauthenticatedError(msg)
        ttl = body.get("expires_in", _DEFAULT_TOKEN_TTL)
        return token, float(ttl) if isinstance(ttl, int | float) else _DEFAULT_TOKEN_TTL


def _sent_authorization(response: Response) -> str:
    """The ``Authorization`` header of the request ``response`` answers ("" if none)."""
    return response.request.headers.get("authorization") or ""


def scope(repository: str, *actions: str) -> str:
    """``repository:<name>:<actions>`` (actions default to ``pull``)."""
    return f"repository:{repository}:{','.join(actions or ('pull',))}"
