"""RaptorFlow Bus: typed events fanned out to guild workers over Celery and Kombu."""

from raptorflow_bus.bus import Bus, Sent, SentBatch
from raptorflow_bus.catalogue import Catalogue, EventSpec
from raptorflow_bus.context import bus_context
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.default import default_bus, emit, get_bus
from raptorflow_bus.envelope import Envelope, Priority
from raptorflow_bus.errors import (
    Backpressure,
    BrokerOutOfMemory,
    BrokerUnavailable,
    BusError,
    ConfigurationError,
    DeadLetterNotFound,
    HandlerError,
    InvalidCursor,
    InvalidEnvelope,
    InvalidEventType,
    InvalidPayload,
    MissingWorkspace,
    NotReplicated,
    OutboxUnavailable,
    PayloadTooLarge,
    UnknownConsumer,
    UnknownEventType,
    Unroutable,
)
from raptorflow_bus.handlers import HandlerGroup
from raptorflow_bus.settings import Settings
from raptorflow_bus.topology import Channel, Consumer, Topology

__all__ = [
    "Backpressure",
    "BrokerOutOfMemory",
    "BrokerUnavailable",
    "Bus",
    "BusError",
    "Catalogue",
    "Channel",
    "ConfigurationError",
    "Consumer",
    "DeadLetter",
    "DeadLetterNotFound",
    "Envelope",
    "EventSpec",
    "HandlerError",
    "HandlerGroup",
    "InvalidCursor",
    "InvalidEnvelope",
    "InvalidEventType",
    "InvalidPayload",
    "MissingWorkspace",
    "NotReplicated",
    "OutboxUnavailable",
    "PayloadTooLarge",
    "Priority",
    "Sent",
    "SentBatch",
    "Settings",
    "Topology",
    "UnknownConsumer",
    "UnknownEventType",
    "Unroutable",
    "bus_context",
    "default_bus",
    "emit",
    "get_bus",
]
