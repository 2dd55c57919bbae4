"""Who is at the console: a login a browser can use, and forms only the
logged-in page can post.

A browser cannot send the API's bearer header by itself, so the console has a
login form: the token given there is checked by the app's ``login`` function
(the same tokens as its API auth) and kept in a cookie that is HttpOnly (no
script reads it), SameSite=Strict (no other site's page sends it), scoped to
the console's path, and Secure over HTTPS. Every request checks the token
again, so a token the app revokes stops working at once; there is no session
store to keep in step.

Every form that changes something carries a CSRF token in a hidden field,
derived from the session's token with HMAC (unguessable without it, the same
in every process of the app) and compared in constant time on each POST; a
POST whose ``Origin`` names another site is refused as well."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request

from raptorflow_bus.errors import BusError, PayloadTooLarge
from raptorflow_bus.fastapi.errors import Forbidden, InvalidRequest
from raptorflow_bus.fastapi.models import Principal

COOKIE = "raptorbus_console"
CSRF_FIELD = "csrf"
# Long enough for an edited payload at the bus's size limit, escaped in a form.
FORM_LIMIT = 4 * 1024 * 1024

Login = Callable[[str], Principal | None]


class LoginRequired(BusError):
    """No valid console session: a page redirects to the login form."""


@dataclass(frozen=True)
class Session:
    principal: Principal
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    @property
    def who(self) -> str:
        """The name edits and logs record."""
        if self.principal.name:
            return self.principal.name
        workspace = self.principal.workspace
        return "operator" if workspace is None else f"user of workspace {workspace}"


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"raptorbus-console-csrf", hashlib.sha256).hexdigest()


def session_of(request: Request, login: Login) -> Session:
    token = request.cookies.get(COOKIE, "")
    principal = login(token) if token else None
    if principal is None:
        raise LoginRequired("log in to use the console")
    return Session(principal, token)


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form body, read no further than ``FORM_LIMIT`` bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise PayloadTooLarge(f"form is over the limit of {FORM_LIMIT} bytes")
    if kind != "application/x-www-form-urlencoded" and body:
        raise InvalidRequest(f"the console takes urlencoded forms, not {kind or 'no type'}")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise InvalidRequest("form is not UTF-8") from None


def check_post(request: Request, session: Session, form: dict[str, str]) -> None:
    """Refuse a POST not made from a console page of this session."""
    origin = request.headers.get("origin")
    # "null" is what a browser sends when it will not say (a no-referrer policy
    # somewhere on the way); the CSRF token below still has to match.
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"a form posted from {origin} is refused")
    if not hmac.compare_digest(form.get(CSRF_FIELD, ""), session.csrf):
        raise Forbidden("this form is stale or was not sent from the console; reload the page")
