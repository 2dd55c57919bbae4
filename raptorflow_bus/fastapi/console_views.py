"""How the console renders: Jinja2 templates from the package, autoescaped.

Letter contents are attacker-influenced (a payload, an exception message, a
traceback can hold any text), so every template is autoescaped and nothing
is marked safe. The headers forbid scripts altogether and framing by another
site (a confirmation page in a hidden frame would be clickjacking bait); the
console needs no JavaScript."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from raptorflow_bus.envelope import utcnow

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": Chromium then sends ``Origin: null`` on the console's own forms.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = max((utcnow() - moment).total_seconds(), 0.0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("raptorflow_bus.fastapi", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, pretty=pretty)
    return env


ENVIRONMENT = _environment()


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    body = ENVIRONMENT.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)
