"""The console-script entry point: usage errors on one line with exit code 2, help and version intact."""

from __future__ import annotations

import pytest

from moirai_cli.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["forecast", "data.csv"], "error: Missing option '--horizon' / '-H'. (see moirai forecast --help)"),
        (["forecast"], "error: Missing argument 'DATA'. (see moirai forecast --help)"),
        (["evaluate", "data.csv", "-H", "x"], "'-H': "),
        (["forecast", "data.csv", "-H", "2", "--bogus"], "error: No such option: --bogus (see moirai forecast --help)"),
        (["predict"], "error: No such command 'predict'. (see moirai --help)"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert lines[0].endswith("--help)")


def test_help_version_and_bare_command(capsys):
    assert main(["evaluate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--windows" in text and "WQL" in text and "geometric" in text
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("moirai-cli ")
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "forecast" in captured.out and "evaluate" in captured.out and captured.err == ""


def test_command_errors_keep_their_exit_code(capsys, tmp_path):
    assert main(["forecast", str(tmp_path / "missing.csv"), "-H", "2"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.csv'}: no such file\n"


@pytest.mark.parametrize("command", [[], ["forecast"], ["evaluate"], ["download"]])
def test_help_shows_no_value_type_after_flags(capsys, command):
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--help" in text and "<bool>" not in text
    if command[:1] in (["forecast"], ["evaluate"]):
        assert "--quiet" in text and "--threads" in text
