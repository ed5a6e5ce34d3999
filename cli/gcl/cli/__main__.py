"""`python -m gcl.cli ARGS`: the `gcl` command, for when the script is not on PATH."""

from gcl.cli.main import main

main()
