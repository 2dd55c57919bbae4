"""celeryconfig with a 3 s visibility timeout and a restore sweep every second,
so a test sees an abandoned task come back without waiting an hour."""

from celeryconfig import *  # noqa: F403
from celeryconfig import broker_transport_options

broker_transport_options = {
    **broker_transport_options,
    "visibility_timeout": 3,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
task_time_limit = 2.5
task_soft_time_limit = 2
raptorbus_retry_cap_seconds = 1.0
