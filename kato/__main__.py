"""`python -m kato`: the kato CLI."""

from kato.cli import main

main()
