"""``python -m spgs``: the same as the ``spk`` command."""

from spgs.cli import main

main()
