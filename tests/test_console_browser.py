"""The DLQ console as a person uses it, in headless Chromium: real Celery
workers on a real Redis dead-letter campaigns that Guardian's compliance
check refuses (a blocked channel in the payload) and agent runs whose
forecast times out. The operator logs in, finds the compliance group, fixes
each letter's payload (one attempt refused by the event's model), replays the
group through its confirmation page, and sees the group disappear while the
other stays. Screenshots are kept in artifacts/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.api import create_app
from raptorflow_bus import Bus, Envelope
from tests.api_server import api_client
from tests.browser import Browser, headless_chromium, wait_for_page
from tests.harness import RedisBackend, wait_until
from tests.test_console import CONSOLE, TOKENS

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
COMPLIANCE = "guardian.check_campaign_compliance"
BLOCKED = "purchased_email_list"
HOSTILE_NAME = "<script>document.title='pwned'</script>"


class CapacityTimeout(Exception):
    pass


def forecast_capacity(payload: Any, envelope: Envelope) -> None:
    """Matrix's capacity forecast, whose service is down: a second group."""
    raise CapacityTimeout(f"capacity service timed out after {int(envelope.id[:2], 16) / 10}s")


@pytest.fixture
def console(redis_backend: RedisBackend) -> Iterator[tuple[Bus, str]]:
    with redis_backend.bus() as bus:
        bus.load_handlers()
        bus.subscribe("agent.task_started", forecast_capacity, "matrix", name="forecast_capacity")
        with redis_backend.running(bus), api_client(create_app(bus, TOKENS)) as api:
            seed(api)
            wait_until(lambda: bus.dlq.count() == 5, timeout=90, what="five dead letters")
            yield bus, str(api.base_url)


def seed(api: httpx.Client) -> None:
    """Through the example API, as RaptorFlow's users cause them."""
    campaigns = [
        ("tok-a", "camp-1", "Spring launch"),
        ("tok-a", "camp-2", HOSTILE_NAME),
        ("tok-b", "camp-3", "Autumn retargeting"),
    ]
    for token, campaign, name in campaigns:
        answer = api.post(
            f"/campaigns/{campaign}/activate",
            json={"name": name, "channels": ["linkedin", BLOCKED]},
            headers={"Authorization": f"Bearer {token}", "X-Correlation-Id": f"corr-{campaign}"},
        )
        assert answer.status_code == 202, answer.text
    for agent in ("MAT-1", "MAT-2"):
        answer = api.post(
            f"/agents/{agent}/runs",
            json={"task_type": "forecast"},
            headers={"Authorization": "Bearer tok-a"},
        )
        assert answer.status_code == 202, answer.text


def shot(browser: Browser, name: str) -> None:
    path = ARTIFACTS / f"console-{name}.png"
    path.unlink(missing_ok=True)
    browser.screenshot(path)
    assert path.stat().st_size > 10_000, path


def group_rows(browser: Browser) -> dict[str, str]:
    rows = re.findall(r'<tr data-group="([0-9a-f]+)">(.*?)</tr>', browser.source, re.S)
    return dict(rows)


def test_an_operator_fixes_and_replays_a_failure_group_and_it_disappears(
    console: tuple[Bus, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus, base = console
    with headless_chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as browser:
        browser.open(f"{base}{CONSOLE}/")
        assert browser.url.endswith(f"{CONSOLE}/login")
        assert "camp-" not in browser.source
        browser.type("#token", "tok-ops")
        shot(browser, "login")
        browser.click("#log-in")
        browser.wait_for("Failure groups")

        # The groups page: the compliance group, three letters in two workspaces.
        rows = group_rows(browser)
        [gid] = [g for g, row in rows.items() if "ComplianceViolation" in row]
        [other] = [g for g, row in rows.items() if "CapacityTimeout" in row]
        assert "timed out after &lt;n&gt;s" in rows[other]
        assert '<td class="num">3</td>' in rows[gid] and "ws-a, ws-b" in rows[gid]
        shot(browser, "groups")

        browser.click(f'tr[data-group="{gid}"] a')
        assert browser.text("#group-count") == "3"
        letter_ids = re.findall(r'<tr data-letter="([^"]+)">', browser.source)
        assert len(letter_ids) == 3
        shot(browser, "group")

        for n, letter_id in enumerate(letter_ids):
            browser.open(f"{base}{CONSOLE}/groups/{gid}")
            browser.click(f'tr[data-letter="{letter_id}"] a')
            assert "uses blocked channel(s)" in browser.text("#message")
            assert "check_campaign_compliance" in browser.text("#traceback")
            if HOSTILE_NAME in browser.text("#payload"):
                # The payload's script is text on the page, and never ran.
                assert browser.title != "pwned" and "pwned" not in browser.script(
                    "return document.title"
                )
                shot(browser, "letter")
            browser.click("#edit-letter")
            payload = json.loads(
                browser.script("return document.getElementById('payload-editor').value")
            )
            if n == 0:  # a fix that does not fit the event's model is refused
                browser.type("#payload-editor", json.dumps({**payload, "channels": "linkedin"}))
                browser.click("#save-only")
                browser.wait_for('id="edit-error"')
                assert "does not match CampaignActivatePayload" in browser.text("#edit-error")
                shot(browser, "edit-refused")
            payload["channels"] = [c for c in payload["channels"] if c != BLOCKED]
            browser.type("#payload-editor", json.dumps(payload, indent=2))
            browser.click("#save-only")
            browser.wait_for("Payload saved")
            assert "Payload saved" in browser.source and "ops" in browser.text("#edits")

        # The whole group, through its confirmation page.
        browser.open(f"{base}{CONSOLE}/groups/{gid}")
        browser.click("#replay-group")
        assert "Replay this failure group?" in browser.source
        shot(browser, "confirm-replay")
        browser.click("#confirm")
        browser.wait_for("sent to their handler again")
        assert "3 letter(s) sent to their handler again" in browser.source
        wait_for_page(browser, lambda b: gid not in group_rows(b), "the group to disappear")
        assert set(group_rows(browser)) == {other}
        shot(browser, "groups-after")

    assert bus.dlq.count() == 2
    replayed = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"replay of {COMPLIANCE} succeeded")
    ]
    for campaign in ("camp-1", "camp-2", "camp-3"):  # with their original correlation ids
        assert any(f"correlation_id=corr-{campaign}" in line for line in replayed), replayed
