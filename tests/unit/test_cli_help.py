"""Every command's --help renders (rich markup in a help text once broke `serve --help`)."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from openft.cli.main import app


def commands() -> list[list[str]]:
    root = get_command(app)
    found: list[list[str]] = [[]]
    for name, command in getattr(root, "commands", {}).items():
        found.append([name])
        for sub in getattr(command, "commands", {}):
            found.append([name, sub])
    return found


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "openft")
def test_help_renders(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
