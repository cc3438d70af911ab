"""The agent commands' answers, one module each: ``stats``, ``talkers`` (with ``discovery``, the
same read's LLD rows) and ``namespaces``. Each ``run`` takes its command's typed arguments and
returns the document the agent receives."""
