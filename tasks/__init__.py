"""RaptorFlow's handlers, one module per consumer. ``GROUPS`` is what
``Bus.load_handlers()`` (and so ``raptorbus worker``) includes."""

from tasks import council, guardian, matrix, muse, research

GROUPS = (research.handlers, muse.handlers, matrix.handlers, guardian.handlers, council.handlers)
