"""RaptorFlow's channels, consumers and bindings, declared as data.

The bus reads this module when it connects: each consumer becomes a queue bound
to the topic exchange with every pattern of the channels it hears. The README's
routing table and ``raptorbus topology`` are printed from these same values."""

from raptorflow_bus.topology import Channel, Consumer

EXCHANGE = "raptorflow.events"
DLQ_CAPACITY = 50_000

_K = "raptorflow.events."

CHANNELS = (
    Channel(
        name="heartbeat",
        purpose="liveness and resource pulses of the bus and its hosts",
        patterns=(_K + "bus.health", _K + "system.metrics"),
        retention_hours=1,
        max_queue_length=50_000,
    ),
    Channel(
        name="guild_broadcast",
        purpose="directives and coordination every guild must hear",
        patterns=(_K + "council.directive", _K + "guild.coordination", _K + "metrics.*"),
        retention_hours=24,
        max_queue_length=20_000,
    ),
    Channel(
        name="guild_research",
        purpose="market signals, model output and research stages",
        patterns=(_K + "guild.research.*", _K + "signal.*", _K + "model.*"),
        retention_hours=72,
        max_queue_length=10_000,
    ),
    Channel(
        name="guild_muse",
        purpose="insights to turn into creative work, new campaigns",
        patterns=(_K + "guild.muse.*", _K + "insight.*", _K + "campaign.created"),
        retention_hours=72,
        max_queue_length=10_000,
    ),
    Channel(
        name="guild_matrix",
        purpose="agent runs, moves, resources and workflows to analyse",
        patterns=(
            _K + "guild.matrix.*",
            _K + "agent.task_started",
            _K + "agent.task_completed",
            _K + "resource.*",
            _K + "move.*",
            _K + "workflow.*",
        ),
        retention_hours=72,
        max_queue_length=10_000,
    ),
    Channel(
        name="guild_guardian",
        purpose="compliance checks on campaigns and agent failures",
        patterns=(
            _K + "guild.guardian.*",
            _K + "campaign.activated",
            _K + "campaign.paused",
            _K + "agent.error",
        ),
        retention_hours=72,
        max_queue_length=10_000,
    ),
    Channel(
        name="alert",
        purpose="alerts and error roll-ups that need a human",
        patterns=(_K + "alert.*", _K + "agent.error", _K + "system.error_aggregation"),
        retention_hours=168,
        max_queue_length=50_000,
    ),
    Channel(
        name="state_update",
        purpose="workspace and campaign state changes",
        patterns=(_K + "workspace.*", _K + "campaign.*", _K + "workflow.completed"),
        retention_hours=24,
        max_queue_length=20_000,
    ),
    Channel(
        name="dlq",
        purpose="notices about dead letters (the letters themselves live in the DLQ store)",
        patterns=(_K + "dlq.*",),
        retention_hours=168,
        max_queue_length=50_000,
    ),
)

_GUILD_BROADCAST = "guild_broadcast"

CONSUMERS = (
    Consumer("research", ("guild_research", _GUILD_BROADCAST), "Research guild"),
    Consumer("muse", ("guild_muse", _GUILD_BROADCAST), "Muse (creative) guild"),
    Consumer("matrix", ("guild_matrix", _GUILD_BROADCAST), "Matrix (intelligence) guild"),
    Consumer("guardian", ("guild_guardian", _GUILD_BROADCAST), "Guardian (compliance) guild"),
    Consumer("council", tuple(c.name for c in CHANNELS), "Council of Lords: hears everything"),
)
