"""The topic exchange's binding table as Redis holds it, matched as Kombu matches it.

Kombu's Redis transport keeps an exchange's bindings in the set
``_kombu.binding.<exchange>``; each member is ``routing_key SEP regex SEP
queue``, where the regex is what ``TopicExchange.prepare_bind`` made of the
routing key when the queue was bound. A stock Kombu producer delivers to every
queue whose stored regex ``re.match``es the message's routing key
(``TopicExchange.lookup``). The bus's fan-out reads the same set and applies
that same rule to those same stored regexes, so a routing key reaches exactly
the queues a stock producer would reach, whoever bound them: who receives an
event never depends on who published it.

Kombu 5.7 writes ``^...$`` with the words joined by ``\\.``, ``*`` as
``[^\\.]+`` (one non-empty word) and ``#`` as ``.*?`` (any text, dots
included, possibly none) while the dot beside a ``#`` stays literal. So, unlike
AMQP (``raptorflow_bus.topic``, against which routing.py is written): ``a.#``
does not match ``a``, ``#.a`` does not match ``a``, ``a.#.b`` does not match
``a.b``, and a ``*`` inside a word is a regex star (``a*`` matches ``aaa``).
Older Kombu stored ``.*?[^\\.]`` for ``*`` (so its ``a.*`` matched ``a.b.c``);
such a member keeps its stored meaning here, as it does for Kombu's lookup.
``tests/test_bindings.py`` checks all of this against Kombu's own lookup.

A table that lacks the bus's own bindings (someone deleted the set) is
repaired by declaring the topology again (``Redeclare``); until then the
publisher's union with routing.py keeps the bus's own emits reaching them."""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from raptorflow_bus.logs import log
from raptorflow_bus.topology import PRIORITY_SEP, Topology

ROUTE_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=1024)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex, re.U)


@dataclass(frozen=True)
class Binding:
    routing_key: str
    regex: str
    queue: str

    def matches(self, routing_key: str) -> bool:
        return _compiled(self.regex).match(routing_key) is not None


class BindingTable:
    """One reading of an exchange's binding set. ``token`` names the reading
    (``<version>:<member count>``, as ``lua/publish.lua`` computes it); members
    Kombu itself could not route with (not three fields, a regex that does not
    compile) are kept aside in ``unusable`` rather than failing every emit."""

    def __init__(self, token: str, bindings: Iterable[Binding], unusable: Iterable[str] = ()):
        self.token = token
        self.bindings = tuple(bindings)
        self.unusable = tuple(unusable)
        self._routes: dict[str, tuple[str, ...]] = {}

    @classmethod
    def parse(
        cls, token: str, members: Iterable[bytes | str], sep: str = PRIORITY_SEP
    ) -> BindingTable:
        bindings: list[Binding] = []
        unusable: list[str] = []
        for raw in members:
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            fields = text.split(sep)
            if len(fields) != 3:
                unusable.append(text)
                continue
            try:
                _compiled(fields[1])
            except re.error:
                unusable.append(text)
                continue
            bindings.append(Binding(*fields))
        return cls(token, bindings, unusable)

    def queues_for(self, routing_key: str) -> tuple[str, ...]:
        """The queues Kombu's topic lookup gives for ``routing_key`` (sorted)."""
        found = self._routes.get(routing_key)
        if found is None:
            found = tuple(
                sorted({b.queue for b in self.bindings if b.queue and b.matches(routing_key)})
            )
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[routing_key] = found
        return found

    def missing(self, topology: Topology) -> list[tuple[str, str]]:
        """The bus's own (pattern, queue) bindings this table lacks."""
        present = {(b.routing_key, b.queue) for b in self.bindings}
        return [
            (pattern, topology.event_queue(consumer))
            for consumer in topology.consumers
            for pattern in topology.patterns(consumer)
            if (pattern, topology.event_queue(consumer)) not in present
        ]


class Redeclare:
    """Puts the bus's own bindings back when the table lacks them (someone
    deleted the set): bus emits reach those queues anyway, a stock producer's
    would not. Runs ``declare`` on a thread of its own, one at a time, so an
    emit never waits for it."""

    def __init__(self, declare: Callable[[], None]) -> None:
        self._declare = declare
        self._busy = threading.Lock()

    def __call__(self, missing: Sequence[tuple[str, str]]) -> None:
        if not self._busy.acquire(blocking=False):
            return
        sample = ", ".join(f"{queue} <- {pattern}" for pattern, queue in missing[:3])
        log(
            logging.WARNING,
            f"the binding table lacks {len(missing)} of the bus's bindings ({sample}); "
            "declaring the topology again",
        )
        threading.Thread(target=self._run, name="raptorbus-redeclare", daemon=True).start()

    def _run(self) -> None:
        try:
            self._declare()
        except Exception as exc:
            log(logging.ERROR, f"could not declare the topology again: {exc}")
        finally:
            self._busy.release()
