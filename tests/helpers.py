"""Helpers the CLI tests share (tests/ is on sys.path under pytest)."""

from __future__ import annotations


def invoke(*args):
    """Run the vrft-lite command in-process; returns click's Result."""
    from click.testing import CliRunner

    import cli

    return CliRunner().invoke(cli.main, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> None:
    """A user's mistake: exit 1, one 'Error:' line naming the needles, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
