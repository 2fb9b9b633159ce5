"""Run the CLI in-process and capture what a user would see."""

from click.testing import CliRunner

from autodistil_evo.cli import main


def run_cli(*args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    output = result.output  # what the terminal shows: stdout and stderr, interleaved
    assert result.exit_code == expect, f"exit {result.exit_code} != {expect}\n{output}"
    return output


def assert_no_absolute_paths(model_dir):
    """A student folder's card and provenance name nothing by an absolute local path."""
    import json
    import os
    import re
    from pathlib import Path

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    provenance = json.loads((Path(model_dir) / "autodistil_provenance.json").read_text())
    absolute = [s for s in strings(provenance) if os.path.isabs(s)]
    absolute += re.findall(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*", (Path(model_dir) / "README.md").read_text())
    assert not absolute, absolute
