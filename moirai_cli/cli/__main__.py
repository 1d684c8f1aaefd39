"""`python -m moirai_cli.cli`: the `moirai` executable."""

from moirai_cli.cli.app import run

run()
