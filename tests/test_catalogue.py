import pytest
from pydantic import BaseModel

from raptorflow_bus import Catalogue, InvalidEventType, InvalidPayload, UnknownEventType
from raptorflow_bus import events as ev
from raptorflow_bus.testing import eager_bus
from tests.payloads import VALID

STATUS_REPORT_NAMES = """AgentStartPayload AgentCompletePayload AgentErrorPayload
CampaignActivatePayload CampaignPausePayload MoveExecutePayload SignalDetectedPayload
InsightGeneratedPayload ResourceAllocationPayload AlertCreatedPayload WorkspaceUpdatePayload
ResearchGuildEventPayload MuseGuildEventPayload MatrixGuildEventPayload
GuardianGuildEventPayload InterGuildCoordinationPayload CouncilOfLordsDirectivePayload
PerformanceMetricsPayload RaptorBusHealthPayload SystemMetricsPayload
ErrorAggregationPayload""".split()


def test_the_21_payloads_of_the_status_report_exist_and_each_has_an_event_type() -> None:
    assert len(STATUS_REPORT_NAMES) == 21
    assert [m.__name__ for m in ev.STATUS_REPORT_PAYLOADS] == STATUS_REPORT_NAMES
    bound = {model for model, _ in ev.EVENT_TYPES.values()}
    assert set(ev.STATUS_REPORT_PAYLOADS) <= bound


def test_every_catalogued_type_has_a_valid_sample() -> None:
    assert set(VALID) == set(ev.EVENT_TYPES)
    for event_type, data in VALID.items():
        assert isinstance(ev.validate_payload(event_type, data), BaseModel)


@pytest.mark.parametrize(
    ("event_type", "data", "model"),
    [
        (
            "agent.task_started",
            {"agent_id": "RES-001", "task_type": "research"},
            ev.AgentStartPayload,
        ),
        (
            "model.inference_complete",
            {"tokens_used": 1500, "response": "..."},
            ev.ModelInferenceCompletePayload,
        ),
        ("agent.error", {"error": "...", "component": "research_agent"}, ev.AgentErrorPayload),
    ],
)
def test_the_api_doc_examples_validate_as_written(
    event_type: str, data: dict[str, object], model: type[BaseModel]
) -> None:
    assert isinstance(ev.validate_payload(event_type, data), model)


def test_the_api_doc_event_names_are_catalogued() -> None:
    for name in (
        "agent.task_started",
        "agent.task_completed",
        "agent.error",
        "model.inference_complete",
        "campaign.created",
        "workflow.completed",
    ):
        assert name in Catalogue.default()


def test_unknown_types_get_suggestions_and_bad_payloads_name_the_field() -> None:
    cat = Catalogue.default()
    with pytest.raises(UnknownEventType, match="did you mean 'agent.task_started'"):
        cat.validate("agent.task_startd", {})
    with pytest.raises(InvalidPayload, match="tokens_used"):
        cat.validate("model.inference_complete", {"tokens_used": -1, "response": ""})
    with pytest.raises(InvalidPayload, match="takes SignalDetectedPayload"):
        cat.validate("signal.detected", ev.AgentStartPayload(agent_id="a", task_type="t"))


def test_custom_events_can_be_registered_typed_or_untyped() -> None:
    class Deployed(BaseModel):
        service: str

    cat = Catalogue.default()
    cat.register("alert.deployed", Deployed, workspace_scoped=False)
    cat.register("alert.raw")
    assert cat.validate("alert.deployed", {"service": "api"}) == Deployed(service="api")
    assert cat.validate("alert.raw", {"anything": 1}) == {"anything": 1}
    with pytest.raises(InvalidPayload, match="must be a dict"):
        cat.validate("alert.raw", [1])
    with pytest.raises(InvalidEventType, match="already registered"):
        cat.register("alert.raw", Deployed)
    with pytest.raises(InvalidEventType, match="wildcard"):
        cat.register("alert.*")


def test_an_untyped_custom_event_reaches_its_handler_as_a_dict() -> None:
    cat = Catalogue.default()
    cat.register("alert.raw", workspace_scoped=False)
    seen = []
    with eager_bus(catalogue=cat) as bus:
        bus.subscribe("alert.raw", lambda p: seen.append(p), guild="council", name="raw")
        bus.emit("alert.raw", {"k": "v"})
    assert seen == [{"k": "v"}]
