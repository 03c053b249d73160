"""``python -m spiketrain.nirimport``: the same as the ``spikeserve-import`` command."""

from .cli import main

main()
