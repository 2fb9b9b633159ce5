"""Run the CLI in-process and capture what a user would see."""

from click.testing import CliRunner

from autodistil_evo.cli import main


def run_cli(*args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    output = result.output  # what the terminal shows: stdout and stderr, interleaved
    assert result.exit_code == expect, f"exit {result.exit_code} != {expect}\n{output}"
    return output
