"""The DLQ console: server-rendered pages over the dead-letter queue, on the
bus router, with no JavaScript and no build step.

What it shows: failure groups (handler, exception type, normalised message)
with counts, first and last seen, workspaces and event types; each group's
letters; a letter's envelope, error, traceback, attempt history and edits.
What it does: replay a letter or a whole group, purge either, and fix a
payload (validated against the event's model) before replaying it with the
same envelope ids. Every change goes through a confirmation page or a
deliberate form, so nothing happens from one stray click, with or without
JavaScript.

Every page reads a bounded amount: a page of groups from their aggregates, a
page of letters from a cursor walk (``bus.dlq.page``, ``group_page``). A
caller bound to a workspace sees, replays, edits and purges only that
workspace's letters (``scope.py``); login and CSRF are ``console_auth.py``."""

# No ``from __future__ import annotations``: FastAPI reads these signatures'
# annotations at runtime, and the dependencies are local to ``console_router``.

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from raptorflow_bus.bus import Bus
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import LetterFilter
from raptorflow_bus.dlq_groups import group_of
from raptorflow_bus.errors import BusError, InvalidPayload, PayloadTooLarge
from raptorflow_bus.fastapi.console_auth import (
    COOKIE,
    Login,
    LoginRequired,
    Session,
    check_post,
    form_of,
    session_of,
)
from raptorflow_bus.fastapi.console_views import render
from raptorflow_bus.fastapi.errors import InvalidRequest, status_for
from raptorflow_bus.fastapi.lifespan import provide_bus
from raptorflow_bus.fastapi.scope import letter_for, scoped_workspace
from raptorflow_bus.logs import log

CONSOLE_PREFIX = "/bus/console"
PAGE_SIZE = 25
AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
AGE_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
# What a group's or a letter's confirm-then-POST routes may do, and its notice.
ACTIONS = {"replay": "replayed", "purge": "purged"}
# What a redirect after a change may say: codes, so a link cannot put words on the page.
NOTICES = {
    "replayed": "{n} letter(s) sent to their handler again; each leaves the queue "
    "when its handler succeeds.",
    "purged": "{n} letter(s) purged.",
    "edited": "Payload saved on the letter; it has not been replayed yet.",
    "edited-replayed": "Payload saved and the letter replayed with its original ids.",
}


@dataclass(frozen=True)
class Filters:
    """The console's filters, as typed in its forms and carried in its links."""

    guild: str = ""
    handler: str = ""
    event_type: str = ""
    workspace_id: str = ""
    older_than: str = ""

    @classmethod
    def read(cls, values: Mapping[str, str]) -> "Filters":
        return cls(**{f.name: values.get(f.name, "").strip() for f in fields(cls)})

    def where(self, session: Session) -> LetterFilter:
        age = None
        if self.older_than:
            match = AGE_RE.match(self.older_than)
            if match is None:
                raise InvalidRequest(
                    f"age {self.older_than!r} is not a number and a unit (s, m, h, d), like 2h"
                )
            age = timedelta(seconds=float(match[1]) * AGE_UNITS[match[2]])
        return LetterFilter(
            workspace_id=scoped_workspace(session.principal, self.workspace_id or None),
            event_type=self.event_type or None,
            handler=self.handler or None,
            guild=self.guild or None,
            older_than=age,
        )

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in asdict(self).items() if v]

    def query(self, **more: str | None) -> str:
        pairs = self.items() + [(k, v) for k, v in more.items() if v]
        return "?" + urlencode(pairs) if pairs else ""

    @property
    def active(self) -> bool:
        return bool(self.items())


class ConsoleRoute(APIRoute):
    """Errors as pages: no session sends the browser to the login form, a bus
    error is an HTML page with the status the JSON routes would answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginRequired:
                return RedirectResponse(f"{base_of(request)}/login", status_code=303)
            except BusError as exc:
                return _error_page(request, status_for(exc), type(exc).__name__, str(exc))
            except RequestValidationError as exc:
                problems = "; ".join(str(e.get("msg", "")) for e in exc.errors())
                return _error_page(request, 422, "RequestValidationError", problems)

        return route_handler


def base_of(request: Request) -> str:
    """The console's URL path as this request reached it (an app may mount the
    router under a prefix of its own)."""
    path = request.url.path
    return path[: path.index(CONSOLE_PREFIX) + len(CONSOLE_PREFIX)]


def _error_page(request: Request, status: int, error: str, detail: str) -> Response:
    return render(
        "error.html", status, base=base_of(request), session=None, notice=None,
        status=status, error=error, detail=detail,
    )  # fmt: skip


def _notice(request: Request) -> str | None:
    template = NOTICES.get(request.query_params.get("done", ""))
    count = request.query_params.get("n", "")
    return None if template is None else template.format(n=count if count.isdigit() else "")


def _done(kind: str, action: str) -> str:
    """The past tense of ``action``, which the URL chose; a clear 4xx otherwise."""
    if action not in ACTIONS:
        raise InvalidRequest(f"no {kind} action {action!r}; it is one of {', '.join(ACTIONS)}")
    return ACTIONS[action]


def _payload_text(letter: DeadLetter) -> str:
    return json.dumps(letter.envelope.payload if letter.envelope else {}, indent=2, sort_keys=True)


def console_router(bus_dependency: Callable[..., Any] = provide_bus, *, login: Login) -> APIRouter:
    """The console's pages under ``/bus/console``. ``login`` turns the token
    typed on the login page into a ``Principal`` (None refuses it); there is
    no default, so the console is never served without authentication.
    ``bus_router(..., auth=..., console=login)`` mounts it."""
    router = APIRouter(prefix=CONSOLE_PREFIX, route_class=ConsoleRoute, include_in_schema=False)
    BusDep = Annotated[Bus, Depends(bus_dependency)]

    def current(request: Request) -> Session:
        return session_of(request, login)

    Current = Annotated[Session, Depends(current)]

    def page(
        template: str, request: Request, session: Session, status: int = 200, **ctx: Any
    ) -> Response:
        return render(
            template, status, base=base_of(request), session=session, notice=_notice(request),
            **ctx,
        )  # fmt: skip

    def to(request: Request, path: str) -> Response:
        return RedirectResponse(f"{base_of(request)}{path}", status_code=303)

    async def posted(request: Request, session: Session) -> dict[str, str]:
        form = await form_of(request)
        check_post(request, session, form)
        return form

    def audit(session: Session, what: str) -> None:
        log(logging.INFO, f"DLQ console: {session.who} {what}")

    # Login ------------------------------------------------------------------

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        return render("login.html", base=base_of(request), session=None, notice=None, error=None)

    @router.post("/login")
    async def log_in(request: Request) -> Response:
        form = await form_of(request)
        token = form.get("token", "").strip()
        principal = await asyncio.to_thread(login, token) if token else None
        if principal is None:
            return render(
                "login.html", 401, base=base_of(request), session=None, notice=None,
                error="That token is not valid here.",
            )  # fmt: skip
        response = to(request, "/")
        response.set_cookie(
            COOKIE, token, path=base_of(request), httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    @router.post("/logout")
    async def log_out(request: Request, session: Current) -> Response:
        await posted(request, session)
        response = to(request, "/login")
        response.delete_cookie(COOKIE, path=base_of(request), httponly=True, samesite="strict")
        return response

    # Reading ----------------------------------------------------------------

    def choices(bus: Bus) -> dict[str, Any]:
        return {"guilds": sorted(bus.topology.consumers), "event_types": list(bus.catalogue)}

    @router.get("/")
    async def groups_page(
        request: Request, bus: BusDep, session: Current, cursor: str | None = None
    ) -> Response:
        filters = Filters.read(request.query_params)
        where = filters.where(session)
        found = await asyncio.to_thread(bus.dlq.groups, where, cursor=cursor, limit=PAGE_SIZE)
        total = (
            await asyncio.to_thread(bus.dlq.count) if session.principal.workspace is None else None
        )
        return page(
            "groups.html", request, session, filters=filters, groups=found.groups,
            next_cursor=found.next_cursor, total=total, **choices(bus),
        )  # fmt: skip

    @router.get("/letters")
    async def letters_page(
        request: Request, bus: BusDep, session: Current, cursor: str | None = None
    ) -> Response:
        filters = Filters.read(request.query_params)
        where = filters.where(session)
        found = await asyncio.to_thread(bus.dlq.page, where, cursor=cursor, limit=PAGE_SIZE)
        return page(
            "letters.html", request, session, filters=filters, letters=found.letters,
            next_cursor=found.next_cursor, **choices(bus),
        )  # fmt: skip

    @router.get("/groups/{group_id}")
    async def group_page(
        request: Request, group_id: str, bus: BusDep, session: Current, cursor: str | None = None
    ) -> Response:
        filters = Filters.read(request.query_params)
        where = filters.where(session)

        def read() -> tuple[Any, Any]:
            group = bus.dlq.group(group_id, where.workspace_id)
            return group, bus.dlq.group_page(group_id, where, cursor=cursor, limit=PAGE_SIZE)

        group, found = await asyncio.to_thread(read)
        return page(
            "group.html", request, session, filters=filters, group=group,
            letters=found.letters, next_cursor=found.next_cursor,
        )  # fmt: skip

    @router.get("/letters/{letter_id}")
    async def letter_page(
        request: Request, letter_id: str, bus: BusDep, session: Current
    ) -> Response:
        letter = await asyncio.to_thread(letter_for, bus, session.principal, letter_id)
        return page("letter.html", request, session, letter=letter, group_id=group_of(letter).id)

    # Changing: each GET is the confirmation, its form's POST does it ---------

    @router.get("/groups/{group_id}/{action}")
    async def confirm_group(
        request: Request, group_id: str, action: str, bus: BusDep, session: Current
    ) -> Response:
        _done("group", action)
        filters = Filters.read(request.query_params)
        group = await asyncio.to_thread(
            bus.dlq.group, group_id, filters.where(session).workspace_id
        )
        return page(
            "confirm.html", request, session, action=action, filters=filters, group=group,
            letter=None, target=f"/groups/{group_id}/{action}",
            back=f"/groups/{group_id}{filters.query()}",
        )  # fmt: skip

    @router.post("/groups/{group_id}/{action}")
    async def change_group(
        request: Request, group_id: str, action: str, bus: BusDep, session: Current
    ) -> Response:
        form = await posted(request, session)
        where = Filters.read(form).where(session)
        done = _done("group", action)
        if action == "replay":
            count = len(await asyncio.to_thread(bus.dlq.replay_group, group_id, where))
        else:
            count = await asyncio.to_thread(bus.dlq.purge_group, group_id, where)
        audit(session, f"{done} {count} letter(s) of group {group_id} ({where})")
        return to(request, f"/?done={done}&n={count}")

    @router.get("/letters/{letter_id}/edit")
    async def edit_page(
        request: Request, letter_id: str, bus: BusDep, session: Current
    ) -> Response:
        letter = await asyncio.to_thread(letter_for, bus, session.principal, letter_id)
        return page(
            "edit.html", request, session, letter=letter, text=_payload_text(letter), error=None
        )

    @router.post("/letters/{letter_id}/edit")
    async def edit_letter(
        request: Request, letter_id: str, bus: BusDep, session: Current
    ) -> Response:
        form = await posted(request, session)
        text, replay = form.get("payload", ""), form.get("action") == "replay"

        def edit() -> DeadLetter:
            letter_for(bus, session.principal, letter_id)
            edited = bus.dlq.edit(letter_id, json.loads(text), by=session.who)
            if replay:
                bus.dlq.replay(letter_id)
            return edited

        try:
            edited = await asyncio.to_thread(edit)
        except (json.JSONDecodeError, InvalidPayload, PayloadTooLarge) as exc:
            letter = await asyncio.to_thread(letter_for, bus, session.principal, letter_id)
            problem = f"not JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            return page("edit.html", request, session, 422, letter=letter, text=text, error=problem)
        audit(
            session, f"edited the payload of {letter_id}" + (" and replayed it" if replay else "")
        )
        if replay:
            return to(request, f"/groups/{group_of(edited).id}?done=edited-replayed")
        return to(request, f"/letters/{letter_id}?done=edited")

    @router.get("/letters/{letter_id}/{action}")
    async def confirm_letter(
        request: Request, letter_id: str, action: str, bus: BusDep, session: Current
    ) -> Response:
        _done("letter", action)
        letter = await asyncio.to_thread(letter_for, bus, session.principal, letter_id)
        return page(
            "confirm.html", request, session, action=action, filters=Filters(), group=None,
            letter=letter, target=f"/letters/{letter_id}/{action}",
            back=f"/letters/{letter_id}",
        )  # fmt: skip

    @router.post("/letters/{letter_id}/{action}")
    async def change_letter(
        request: Request, letter_id: str, action: str, bus: BusDep, session: Current
    ) -> Response:
        await posted(request, session)
        done = _done("letter", action)

        def change() -> DeadLetter:
            letter = letter_for(bus, session.principal, letter_id)
            if action == "replay":
                bus.dlq.replay(letter_id)
            else:
                bus.dlq.purge([letter_id])
            return letter

        letter = await asyncio.to_thread(change)
        audit(session, f"{done} letter {letter_id}")
        return to(request, f"/groups/{group_of(letter).id}?done={done}&n=1")

    return router
