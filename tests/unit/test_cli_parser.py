"""The command line is parsed by a parser made for its command alone, to the same result as
the whole parser gives."""

from __future__ import annotations

import argparse

import pytest

from layerbuild import cli


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_the_list_of_commands_is_the_parsers() -> None:
    assert _commands(cli.parser()) == set(cli.COMMANDS)
    for command in cli.COMMANDS:
        assert _commands(cli.parser(command)) == {command}


@pytest.mark.parametrize("line", [
    ["build", "-t", "app:1", "--network", "none", "ctx"],
    ["--root", "/tmp/store", "build", "--no-cache", "-f", "Dockerfile", "."],
    ["--root=/tmp/x", "save", "-o", "out.tar", "app:1", "base"],
    ["--root", "build", "images", "-q"],  # a store dir named like a command
    ["load", "-i", "a.tar"],
    ["login", "-u", "me", "registry.example"],
    ["du"],
])
def test_one_commands_parser_reads_a_line_as_the_whole_one(line: list[str]) -> None:
    command = cli._command_of(line)
    assert command is not None and command in line
    assert vars(cli.parser(command).parse_args(line)) == vars(cli.parser().parse_args(line))


@pytest.mark.parametrize(("line", "found"), [
    (["--root", "/x", "tag", "a", "b"], "tag"),
    (["--version"], None),
    (["nosuch", "x"], None),
    (["--ro", "/x", "build", "."], None),  # an abbreviated option: the whole parser reads it
    (["--", "build"], None),
    ([], None),
])
def test_the_command_of_a_line(line: list[str], found: str | None) -> None:
    assert cli._command_of(line) == found


def test_an_unknown_command_is_told_by_the_whole_parser(capsys: pytest.CaptureFixture[str],
                                                        ) -> None:
    with pytest.raises(SystemExit):
        cli.main(["nosuch"])
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("columns", [None, "", "abc", "0", "-3", "57", "132"])
def test_help_is_as_wide_as_argparse_would_make_it(columns: str | None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The formatter is told the width shutil would give argparse's own (which imports shutil
    to ask), so help reads the same."""
    import shutil

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli._columns() == shutil.get_terminal_size().columns
    ours = cli.parser("build")
    [sub] = [a for a in ours._actions if isinstance(a, argparse._SubParsersAction)]
    build = sub.choices["build"]
    plain = argparse.ArgumentParser(prog=build.prog, description=build.description)
    for action in build._actions[1:]:  # all but -h, which the plain parser has of its own
        plain._add_action(action)
    assert build.format_help() == plain.format_help()
