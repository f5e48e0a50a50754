"""``python -m pycluster.cli``."""

from . import main

main(prog_name="pycluster")
