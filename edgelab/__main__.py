"""``python -m edgelab``: the same as the ``edgelab`` command."""

from edgelab.cli import main

main()
