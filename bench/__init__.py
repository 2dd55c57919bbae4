"""Benchmarks of RaptorFlow Bus against plain redis-py, Kombu and Celery.

Not an installed package: ``raptorbus bench`` finds this directory next to the
``raptorflow_bus`` package of a source checkout and runs ``bench.run``. Worker
processes started by the benchmark import ``bench.noop_handlers`` and
``bench.plain_app`` from here (the repository root is put on their PYTHONPATH)."""
