"""``python -m prefixcache`` runs the command line."""

from ._cli import main

main()
