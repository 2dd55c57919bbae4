"""Celery settings for RaptorFlow Bus, as plain data (see DESIGN.md section 5
for why each reliability setting is here). ``raptorbus_*`` keys are the bus's own."""

import socket

# JSON only: pickle from a broker is remote code execution.
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]

# Ack after the handler ran; requeue if the worker process dies mid-task.
task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure = True
task_acks_on_timeout = True
worker_prefetch_multiplier = 1

# The longest handler may run 10 minutes; the visibility timeout must exceed
# that and the longest retry countdown, or the message is restored and run twice.
task_time_limit = 600
task_soft_time_limit = 570
# Kombu's Redis transport, except that a consumer pops a message and records it
# as unacked in one atomic step: stock Kombu loses the message popped by a
# worker killed between its BRPOP and the unacked write.
broker_transport = "raptorflow_bus.transport:Transport"
# A connection that goes silent (a NAT or load balancer forgets the flow, no
# FIN, no RST) must fail, not hang: commands time out, TCP keepalive probes an
# idle socket after 5 s, and Kombu drops a BRPOP whose reply is overdue by
# brpop_timeout + health_check_interval, so a worker replaces it within 15 s
# (the fault suite's scenario 11).
broker_transport_options = {
    "visibility_timeout": 3600,
    "queue_order_strategy": "priority",
    "priority_steps": [0, 3, 6, 9],
    "brpop_timeout": 1,
    "health_check_interval": 2,
    "socket_timeout": 3,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "socket_keepalive_options": {
        socket.TCP_KEEPIDLE: 5,
        socket.TCP_KEEPINTVL: 2,
        socket.TCP_KEEPCNT: 3,
    },
}
task_default_priority = 6

# A worker outlives any broker outage: it retries forever with backoff, and
# logs the outage once (raptorflow_bus.logs.OncePerOutage).
broker_connection_retry_on_startup = True
broker_connection_max_retries = None

task_ignore_result = True
result_backend = None

# Flower: task events on. No task-sent events: handler tasks are sent by the
# dispatch step inside the worker, and one more fanout PUBLISH per handler run
# cost about a fifth of the dispatch hop (bench/throughput.py).
worker_send_task_events = True
task_send_sent_event = False
task_track_started = True

worker_hijack_root_logger = False
worker_redirect_stdouts = False
worker_cancel_long_running_tasks_on_connection_loss = False

raptorbus_max_retries = 3
raptorbus_retry_base_seconds = 2.0
raptorbus_retry_cap_seconds = 300.0
raptorbus_retry_jitter = True
# A done-record must outlive any redelivery: 2x the visibility timeout.
raptorbus_dedup_ttl_seconds = 7200
# A dead worker's unacked deliveries are back in their queues within this many
# seconds of its last heartbeat (RAPTORBUS_RECLAIM_SECONDS overrides it).
raptorbus_reclaim_seconds = 15.0
# A guild worker's event hop pops at most this many events at a time (its
# prefetch): one alone when one waits, a backlog in batches (raptorflow_bus.hop).
raptorbus_event_batch = 50
