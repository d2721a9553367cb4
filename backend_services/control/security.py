"""Who may do what: the bearer token, cross-site request checks, security headers.

* **Token.** Mutating operations need ``Authorization: Bearer <token>``; reads need it
  only when the server protects them. The token comes from the ``token`` argument, else
  ``DTESN_CONTROL_TOKEN``, else the file named by ``DTESN_CONTROL_TOKEN_FILE``. It is
  compared in constant time and never logged, never put in a URL. With no token
  configured, mutations are refused (403) with a message saying how to configure one.
* **Cross-site requests.** A mutation must carry the token in a header (which a browser
  never attaches by itself), come from this server's own origin when the browser says
  where it comes from (``Origin``, ``Sec-Fetch-Site``), and send JSON (a form post cannot).
* **Headers.** Every response carries a strict content security policy (scripts and
  styles from this server only, nothing inline, no framing) and related headers.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiohttp import web

from ..errors import SettingsError
from .problems import Problem

__all__ = [
    "CSP",
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "Guard",
    "resolve_token",
    "security_headers",
]

TOKEN_ENV = "DTESN_CONTROL_TOKEN"
TOKEN_FILE_ENV = "DTESN_CONTROL_TOKEN_FILE"
MIN_TOKEN_LENGTH = 16

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def security_headers() -> Mapping[str, str]:
    """The headers every response carries."""
    return _HEADERS


def resolve_token(token: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The control token: argument, else ``DTESN_CONTROL_TOKEN``, else the file named by
    ``DTESN_CONTROL_TOKEN_FILE``; ``None`` when none is configured. Too short a token is
    a :class:`~backend_services.errors.SettingsError` (its value is never shown)."""
    env = os.environ if environ is None else environ
    source = "token"
    value = token
    if value is None and env.get(TOKEN_ENV):
        source, value = TOKEN_ENV, env[TOKEN_ENV]
    if value is None and env.get(TOKEN_FILE_ENV):
        source = TOKEN_FILE_ENV
        try:
            value = Path(env[TOKEN_FILE_ENV]).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                TOKEN_FILE_ENV, env[TOKEN_FILE_ENV], f"a readable token file ({exc.strerror})"
            ) from None
    if value is None:
        return None
    value = value.strip()
    if len(value) < MIN_TOKEN_LENGTH or any(c.isspace() for c in value):
        raise SettingsError(
            source,
            "<hidden>",
            f"a token of at least {MIN_TOKEN_LENGTH} characters without spaces",
        )
    return value


class Guard:
    """Checks a request's credentials and origin (raises :class:`Problem`)."""

    def __init__(
        self,
        token: str | None,
        *,
        protect_reads: bool = False,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self._token = token.encode() if token else None
        self.protect_reads = protect_reads
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def check(self, request: web.Request, *, mutating: bool) -> None:
        """Raise unless ``request`` may proceed."""
        if mutating:
            self._check_origin(request)
        if not (mutating or self.protect_reads):
            return
        if self._token is None:
            raise Problem(
                403,
                "changes are disabled: no control token is configured "
                f"(start the server with --token or set {TOKEN_ENV})",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="backend_services"'}
        if not header:
            raise Problem(
                401,
                "this operation needs 'Authorization: Bearer <token>'",
                headers=challenge,
            )
        if scheme.lower() != "bearer" or not given.strip():
            raise Problem(
                401, "the Authorization header must be 'Bearer <token>'", headers=challenge
            )
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise Problem(
                401,
                "the bearer token is not valid",
                headers={
                    "WWW-Authenticate": 'Bearer realm="backend_services", error="invalid_token"'
                },
            )

    def _check_origin(self, request: web.Request) -> None:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise Problem(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("Origin")
        if origin is None:
            return
        own = f"{request.scheme}://{request.host}"
        if origin.rstrip("/") != own and origin.rstrip("/") not in self.allowed_origins:
            raise Problem(403, f"cross-origin request refused: Origin {origin!r} is not {own!r}")
