"""The DLQ console over HTTP (examples/api.py served by uvicorn, an eager bus
with RaptorFlow's handlers): nothing is shown without a login; the session
cookie is HttpOnly and SameSite=Strict; every change needs the session's CSRF
token and a confirmation step; a user bound to a workspace sees and touches
only its letters; letter contents render inert; a payload edit is validated,
recorded and replayed. The browser walk-through is tests/test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from examples.api import create_app
from raptorflow_bus import Bus, ConfigurationError
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq_groups import group_of
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.fastapi import Principal, bus_router
from raptorflow_bus.testing import eager_bus
from tests.api_server import api_client

TOKENS = {
    "tok-a": Principal(workspace="ws-a", name="alice"),
    "tok-b": Principal(workspace="ws-b", name="bob"),
    "tok-ops": Principal(workspace=None, name="ops"),
}
CONSOLE = "/bus/console"
BLOCKED = ["email", "unverified_sms"]
XSS = "<script>document.title='pwned'</script>"


def campaign(n: int, **more: Any) -> dict[str, Any]:
    return {"campaign_id": f"camp-{n}", "name": f"Campaign {n}", "channels": BLOCKED, **more}


def hostile_letter() -> DeadLetter:
    """A failure whose every field a hostile caller could have chosen."""
    now = utcnow()
    envelope = Envelope(
        type="agent.error",
        payload={"error": XSS, "component": '"><img src=x onerror=alert(1)>'},
        workspace_id="ws-a",
        correlation_id="corr-x",
        request_id="corr-x",
    )
    return DeadLetter(
        id="letter-hostile",
        envelope=envelope,
        handler="guardian.log_agent_error",
        guild="guardian",
        exception_type="ValueError",
        message=f"bad input {XSS}",
        traceback=f"Traceback (most recent call last):\n</pre>{XSS}\nValueError: boom",
        attempts=4,
        first_failed_at=now - timedelta(hours=3),
        last_failed_at=now - timedelta(hours=3),
    )


@pytest.fixture
def seeded() -> Iterator[tuple[Bus, str]]:
    """Compliance failures in two workspaces (the real Guardian handler, run
    eagerly) and one hostile letter; yields the bus and the console's URL."""
    with eager_bus() as bus:
        bus.load_handlers()
        for n in range(3):
            bus.emit(
                "campaign.activated", campaign(n), workspace_id="ws-a", correlation_id=f"c-{n}"
            )
        for n in range(3, 5):
            bus.emit("campaign.activated", campaign(n), workspace_id="ws-b")
        bus.store.dlq_put(hostile_letter(), bus.topology.dlq_capacity)
        assert bus.dlq.count() == 6
        with api_client(create_app(bus, TOKENS)) as client:
            yield bus, str(client.base_url)


@pytest.fixture
def anonymous(seeded: tuple[Bus, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=seeded[1], timeout=30) as client:
        yield client


@contextmanager
def logged_in(base: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post(f"{CONSOLE}/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        yield client


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match, page.text[:2000]
    return match[1]


def compliance_group(bus: Bus) -> str:
    [letter] = bus.dlq.page(limit=1).letters
    return group_of(letter).id


def test_the_console_mounts_only_with_the_apps_auth() -> None:
    with pytest.raises(ConfigurationError, match="console"):
        bus_router(console=TOKENS.get)
    paths = {r.path for r in bus_router(auth=lambda: Principal(), console=TOKENS.get).routes}  # type: ignore[attr-defined]
    assert f"{CONSOLE}/" in paths and f"{CONSOLE}/login" in paths


@pytest.mark.parametrize(
    "path", ["/", "/letters", "/letters/letter-hostile", "/letters/letter-hostile/edit",
             "/groups/x", "/groups/x/replay"],
)  # fmt: skip
def test_no_page_is_served_without_a_login(anonymous: httpx.Client, path: str) -> None:
    answer = anonymous.get(CONSOLE + path)
    assert (answer.status_code, answer.headers["location"]) == (303, f"{CONSOLE}/login")
    assert "camp-" not in answer.text and "ws-a" not in answer.text


def test_a_change_without_a_login_changes_nothing(
    seeded: tuple[Bus, str], anonymous: httpx.Client
) -> None:
    bus, _ = seeded
    gid = compliance_group(bus)
    answer = anonymous.post(f"{CONSOLE}/groups/{gid}/purge", data={"csrf": "x"})
    assert answer.status_code == 303 and answer.headers["location"].endswith("/login")
    anonymous.cookies.set("raptorbus_console", "nope")
    forged = anonymous.post(f"{CONSOLE}/groups/{gid}/purge", data={"csrf": "x"})
    assert forged.status_code == 303
    assert bus.dlq.count() == 6


def test_login_sets_a_strict_httponly_cookie_and_a_wrong_token_is_refused(
    anonymous: httpx.Client,
) -> None:
    wrong = anonymous.post(f"{CONSOLE}/login", data={"token": "tok-zzz"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    right = anonymous.post(f"{CONSOLE}/login", data={"token": "tok-ops"})
    assert right.status_code == 303
    cookie = right.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", f"path={CONSOLE}"):
        assert attribute in cookie
    page = anonymous.get(f"{CONSOLE}/")
    assert page.status_code == 200 and "ops" in page.text
    headers = page.headers
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    logout = anonymous.post(f"{CONSOLE}/logout", data={"csrf": csrf(page)})
    assert logout.status_code == 303
    assert anonymous.get(f"{CONSOLE}/").status_code == 303


def test_the_groups_page_groups_counts_and_filters(seeded: tuple[Bus, str]) -> None:
    bus, base = seeded
    with logged_in(base, "tok-ops") as ops:
        page = ops.get(f"{CONSOLE}/").text
        gid = compliance_group(bus)
        row = re.search(rf'<tr data-group="{gid}">(.*?)</tr>', page, re.S)
        assert row, page
        assert "guardian.check_campaign_compliance" in row[1]
        assert "campaign camp-&lt;n&gt; uses blocked channel(s): unverified_sms" in row[1]
        assert '<td class="num">5</td>' in row[1] and "2: ws-a, ws-b" in row[1]
        assert "6 letters in the queue" in page

        def groups(**params: str) -> set[str]:
            text = ops.get(f"{CONSOLE}/", params=params).text
            return set(re.findall(r'data-group="([0-9a-f]+)"', text))

        hostile = group_of(hostile_letter()).id
        assert groups() == {gid, hostile}
        assert groups(workspace_id="ws-b") == {gid}
        assert groups(event_type="agent.error") == {hostile}
        assert groups(handler="check_campaign_compliance") == {gid}
        assert groups(guild="muse") == set()
        assert groups(older_than="2h") == {hostile}
        bad = ops.get(f"{CONSOLE}/", params={"older_than": "soon"})
        assert bad.status_code == 400 and "soon" in bad.text

        letters = ops.get(f"{CONSOLE}/letters", params={"workspace_id": "ws-b"}).text
        assert len(re.findall(r"data-letter=", letters)) == 2


def test_a_workspace_user_sees_and_touches_only_its_letters(seeded: tuple[Bus, str]) -> None:
    bus, base = seeded
    gid = compliance_group(bus)
    b_letter = next(d for d in bus.dlq.matching() if d.workspace_id == "ws-b")
    with logged_in(base, "tok-b") as user:
        page = user.get(f"{CONSOLE}/")
        assert "ws-a" not in page.text and "letters in the queue" not in page.text
        assert re.search(r'<td class="num">2</td>', page.text)
        assert user.get(f"{CONSOLE}/", params={"workspace_id": "ws-a"}).status_code == 403
        hostile = user.get(f"{CONSOLE}/letters/letter-hostile")
        assert hostile.status_code == 404 and "onerror" not in hostile.text
        assert user.get(f"{CONSOLE}/groups/{group_of(hostile_letter()).id}").status_code == 404
        token = csrf(page)
        assert (
            user.post(f"{CONSOLE}/letters/letter-hostile/purge", data={"csrf": token}).status_code
            == 404
        )
        edit = user.post(
            f"{CONSOLE}/letters/letter-hostile/edit", data={"csrf": token, "payload": "{}"}
        )
        assert edit.status_code == 404

        group = user.get(f"{CONSOLE}/groups/{gid}").text
        assert len(re.findall(r"data-letter=", group)) == 2 and b_letter.id in group
        purged = user.post(f"{CONSOLE}/groups/{gid}/purge", data={"csrf": token})
        assert purged.status_code == 303 and "done=purged&n=2" in purged.headers["location"]
    assert {d.workspace_id for d in bus.dlq.matching()} == {"ws-a"}
    assert bus.dlq.count() == 4


def test_every_change_needs_the_sessions_csrf_token_and_this_sites_origin(
    seeded: tuple[Bus, str],
) -> None:
    bus, base = seeded
    gid = compliance_group(bus)
    with logged_in(base, "tok-ops") as ops, logged_in(base, "tok-a") as other:
        confirm = ops.get(f"{CONSOLE}/groups/{gid}/purge")
        assert confirm.status_code == 200 and "Purge this failure group?" in confirm.text
        assert bus.dlq.count() == 6  # the confirmation page changes nothing
        mine, theirs = csrf(confirm), csrf(other.get(f"{CONSOLE}/"))
        for data in ({}, {"csrf": ""}, {"csrf": theirs}, {"csrf": mine[:-1] + "0"}):
            refused = ops.post(f"{CONSOLE}/groups/{gid}/purge", data=data)
            assert refused.status_code == 403, data
        cross = ops.post(
            f"{CONSOLE}/groups/{gid}/purge",
            data={"csrf": mine},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert bus.dlq.count() == 6
        done = ops.post(f"{CONSOLE}/groups/{gid}/purge", data={"csrf": mine})
        assert done.status_code == 303
        assert bus.dlq.count() == 1


def test_letter_contents_render_inert(seeded: tuple[Bus, str]) -> None:
    _, base = seeded
    with logged_in(base, "tok-a") as user:
        for path in ("/", "/letters", "/letters/letter-hostile", "/letters/letter-hostile/edit",
                     "/letters/letter-hostile/replay",
                     f"/groups/{group_of(hostile_letter()).id}"):  # fmt: skip
            page = user.get(CONSOLE + path)
            assert page.status_code == 200, path
            assert "<script" not in page.text.lower(), path
            assert "<img" not in page.text, path
        letter = user.get(f"{CONSOLE}/letters/letter-hostile").text
        assert "&lt;script&gt;document.title=" in letter
        assert "&lt;/pre&gt;&lt;script&gt;" in letter


def test_an_edit_is_validated_recorded_and_replayed_with_the_original_ids(
    seeded: tuple[Bus, str],
) -> None:
    bus, base = seeded
    letter = next(d for d in bus.dlq.matching() if d.correlation_id == "c-1")
    edit_url = f"{CONSOLE}/letters/{letter.id}/edit"
    with logged_in(base, "tok-a") as user:
        form = user.get(edit_url)
        assert "unverified_sms" in form.text
        token = csrf(form)
        not_json = user.post(
            edit_url, data={"csrf": token, "payload": "{channels:", "action": "save"}
        )
        assert not_json.status_code == 422 and "not JSON" in not_json.text
        invalid = user.post(
            edit_url,
            data={"csrf": token, "payload": '{"campaign_id": "camp-1", "channels": 3}'},
        )
        assert (
            invalid.status_code == 422 and "does not match CampaignActivatePayload" in invalid.text
        )
        assert "{channels:" not in invalid.text and "&#34;channels&#34;: 3" in invalid.text
        assert bus.dlq.get(letter.id).edits == []

        fixed = '{"campaign_id": "camp-1", "name": "Campaign 1", "channels": ["email"]}'
        saved = user.post(edit_url, data={"csrf": token, "payload": fixed, "action": "save"})
        assert saved.status_code == 303 and saved.headers["location"].endswith("done=edited")
        page = user.get(saved.headers["location"]).text
        assert 'id="edits"' in page and "alice" in page and "Payload saved" in page
        stored = bus.dlq.get(letter.id)
        assert stored.envelope is not None and letter.envelope is not None
        assert stored.envelope.payload["channels"] == ["email"]
        assert (stored.envelope.id, stored.envelope.correlation_id) == (letter.envelope.id, "c-1")
        assert [(e.by, e.old_payload["channels"]) for e in stored.edits] == [("alice", BLOCKED)]

        replayed = user.post(edit_url, data={"csrf": token, "payload": fixed, "action": "replay"})
        assert replayed.status_code == 303
        assert "done=edited-replayed" in replayed.headers["location"]
    assert bus.dlq.count() == 5
    with pytest.raises(Exception, match="no dead letter"):
        bus.dlq.get(letter.id)
