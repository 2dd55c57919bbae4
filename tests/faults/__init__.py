"""The fault suite (issue 9): real redis-servers and real ``raptorbus worker``
processes, killed by signal, each scenario reported as one row of counts."""
