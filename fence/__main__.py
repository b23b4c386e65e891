"""`python -m fence`: the fence CLI."""

from fence.cli import main

main()
