"""`python -m coordinator`: the same as `gcl serve`."""

from cli.main import cli

cli(["serve"], prog_name="python -m coordinator")
