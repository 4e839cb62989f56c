"""``python -m requeue`` is the ``requeue`` command."""

from requeue.cli import main

main()
