"""Ids made in bulk (``raptorflow_bus.ids``) are uuid4s like ``uuid.uuid4()``'s,
never repeat, and a forked child never hands out the ids its parent made ahead."""

from __future__ import annotations

import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from raptorflow_bus.ids import uuid4_string, uuid4_strings


def test_bulk_ids_are_version_4_uuids_in_their_usual_text_and_unique() -> None:
    ids = uuid4_strings(500) + [uuid4_string() for _ in range(500)]
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    uuid4_string()  # the parent now holds ids made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, uuid4_string().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != uuid4_string()


@pytest.mark.timeout(60)
def test_threads_taking_ids_together_each_get_their_own_and_never_an_error() -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race is a switch
    try:
        with ThreadPoolExecutor(8) as pool:
            batches = list(pool.map(lambda _: [uuid4_string() for _ in range(5_000)], range(8)))
    finally:
        sys.setswitchinterval(old)
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids) == 40_000
