"""`python -m mirrorc.cli ...` runs the command line."""

from mirrorc.cli import main

main()
