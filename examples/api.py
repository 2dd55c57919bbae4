"""A small RaptorFlow API on the bus: start an agent run, activate and pause a
campaign, and set off the compliance failure that the Guardian guild
dead-letters on purpose. Every route emits real events; the bus's own routes
(``/events``, ``/bus/health``, ``/bus/metrics``, ``/bus/dlq``) come with it,
and the DLQ console at ``/bus/console`` (log in with the same token).

    RAPTORFLOW_API_TOKENS="tok-a=ws-a,tok-ops=*" \\
        uvicorn examples.api:create_app --factory --port 8000

Callers send ``Authorization: Bearer <token>``. A token maps to a workspace,
or to ``*``: an operator, who names the workspace with ``X-Workspace-Id``.
Without ``RAPTORFLOW_API_TOKENS`` one operator token is generated and printed
once. It is the docker-compose ``api`` service and ``raptorbus up --api``."""

# No ``from __future__ import annotations``: FastAPI reads the routes'
# annotations at runtime, and their dependencies are local to ``create_app``.
import hashlib
import os
import secrets
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from raptorflow_bus.bus import Bus, Sent
from raptorflow_bus.context import workspace_id_var
from raptorflow_bus.envelope import Priority
from raptorflow_bus.errors import ConfigurationError
from raptorflow_bus.fastapi import (
    BusContextMiddleware,
    Principal,
    bus_lifespan,
    bus_router,
    install_error_handlers,
    provide_bus,
    send,
)
from raptorflow_bus.fastapi.router import scoped_workspace

TOKENS_ENV = "RAPTORFLOW_API_TOKENS"
# Read by this app on top of the bus's own (docker-compose is tested against both).
ENV_VARS = frozenset({TOKENS_ENV})
OPERATOR = "*"
# A channel Guardian's check_campaign_compliance refuses (tasks/guardian.py).
BLOCKED_CHANNEL = "purchased_email_list"


def parse_tokens(text: str) -> dict[str, Principal]:
    """``token=workspace`` pairs separated by commas; workspace ``*`` is an operator."""
    tokens: dict[str, Principal] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        token, sep, workspace = pair.partition("=")
        if not sep or not token or not workspace:
            raise ConfigurationError(f"{TOKENS_ENV} takes token=workspace pairs, got {pair!r}")
        tokens[token] = Principal(
            workspace=None if workspace == OPERATOR else workspace, name=token_name(token)
        )
    return tokens


def token_name(token: str) -> str:
    """Who the console's audit trail names for a token, without the secret."""
    return "token " + hashlib.sha256(token.encode()).hexdigest()[:10]


def tokens_from_env() -> dict[str, Principal]:
    text = os.environ.get(TOKENS_ENV, "")
    if text:
        return parse_tokens(text)
    token = secrets.token_urlsafe(24)
    print(f"RaptorFlow API operator token (generated, shown once): {token}", file=sys.stderr)
    return {token: Principal(workspace=None, name=token_name(token))}


def bearer_auth(tokens: Mapping[str, Principal]) -> Callable[..., Principal]:
    def auth(authorization: Annotated[str | None, Header()] = None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        principal = tokens.get(token) if scheme.lower() == "bearer" else None
        if principal is None:
            raise HTTPException(
                401,
                detail="a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return principal

    return auth


class AgentRun(BaseModel):
    task_type: str
    input_summary: str | None = None


class CampaignActivation(BaseModel):
    name: str
    channels: list[str] = Field(default_factory=list)
    budget: float | None = None


class CampaignPause(BaseModel):
    reason: str


class Emitted(BaseModel):
    event_id: str
    event_type: str
    correlation_id: str
    workspace_id: str | None
    spooled: bool
    run_id: str | None = None

    @classmethod
    def of(cls, sent: Sent, run_id: str | None = None) -> "Emitted":
        env = sent.envelope
        return cls(
            event_id=env.id,
            event_type=env.type,
            correlation_id=env.correlation_id,
            workspace_id=env.workspace_id,
            spooled=sent.spooled,
            run_id=run_id,
        )


def create_app(
    bus: Bus | None = None,
    tokens: Mapping[str, Principal] | None = None,
    *,
    strict: bool | None = None,
) -> FastAPI:
    """``bus`` None: the process-wide bus from the environment (``REDIS_URL``)."""
    known = tokens if tokens is not None else tokens_from_env()
    auth = bearer_auth(known)
    app = FastAPI(title="RaptorFlow API", lifespan=bus_lifespan(bus, strict=strict))
    app.add_middleware(BusContextMiddleware)
    install_error_handlers(app)
    app.include_router(bus_router(provide_bus, auth=auth, console=known.get))
    BusDep = Annotated[Bus, Depends(provide_bus)]
    Caller = Annotated[Principal, Depends(auth)]

    async def emit(
        bus: Bus, caller: Principal, event_type: str, payload: Any, **options: Any
    ) -> Sent:
        workspace = scoped_workspace(caller, workspace_id_var.get())
        return await send(bus, event_type, payload, workspace_id=workspace, **options)

    @app.post("/agents/{agent_id}/runs", status_code=202)
    async def start_agent_run(agent_id: str, run: AgentRun, bus: BusDep, caller: Caller) -> Emitted:
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        payload = {
            "agent_id": agent_id,
            "task_type": run.task_type,
            "task_id": run_id,
            "input_summary": run.input_summary,
        }
        sent = await emit(bus, caller, "agent.task_started", payload, source_agent_id=agent_id)
        return Emitted.of(sent, run_id)

    @app.post("/campaigns/{campaign_id}/activate", status_code=202)
    async def activate_campaign(
        campaign_id: str, campaign: CampaignActivation, bus: BusDep, caller: Caller
    ) -> Emitted:
        payload = {"campaign_id": campaign_id, **campaign.model_dump()}
        return Emitted.of(await emit(bus, caller, "campaign.activated", payload))

    @app.post("/campaigns/{campaign_id}/pause", status_code=202)
    async def pause_campaign(
        campaign_id: str, pause: CampaignPause, bus: BusDep, caller: Caller
    ) -> Emitted:
        payload = {"campaign_id": campaign_id, "reason": pause.reason}
        return Emitted.of(
            await emit(bus, caller, "campaign.paused", payload, priority=Priority.HIGH)
        )

    @app.post("/demo/compliance-failure", status_code=202)
    async def trigger_compliance_failure(bus: BusDep, caller: Caller) -> Emitted:
        """Activates a campaign on a blocked channel: Guardian's compliance check
        fails, is retried 3 times and lands in the DLQ (``GET /bus/dlq``)."""
        payload = {
            "campaign_id": f"camp-{uuid.uuid4().hex[:8]}",
            "name": "Compliance failure (demo)",
            "channels": ["linkedin", BLOCKED_CHANNEL],
        }
        return Emitted.of(await emit(bus, caller, "campaign.activated", payload))

    return app
