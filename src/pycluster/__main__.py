"""``python -m pycluster`` runs the command line."""

from .cli import main

main(prog_name="pycluster")
