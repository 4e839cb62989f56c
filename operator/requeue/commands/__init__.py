"""What the ``requeue`` subcommands do, behind the thin click wrappers in :mod:`requeue.cli`.

* :mod:`.inspect_cmd` -- ``requeue inspect``: failed-set analysis, printed.
* :mod:`.replay_cmd` -- ``requeue replay``: the replay engine, one-shot, with progress.
* :mod:`.output` -- terminal detection, error reporting, redaction of what is printed.
"""
