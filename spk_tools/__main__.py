"""``python -m spk_tools``: the same as the ``spk`` command."""

from spk_tools.cli import main

main()
