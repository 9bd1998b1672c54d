"""Help text: every command has it, `--help` works everywhere, and the man page is made from it."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from auditd_lite.cli import build_parser
from auditd_lite.manpage import render, subcommands
from conftest import run_cli


def all_commands(parser, prefix=()):
    """(path, help, parser) for every command and nested action, e.g. ('db', 'current')."""
    for name, help_, sub in subcommands(parser):
        yield (*prefix, name), help_, sub
        yield from all_commands(sub, (*prefix, name))


def help_problems(parser) -> list[str]:
    """What is missing: a command without a one-line help or without a description."""
    problems = []
    for path, help_, sub in all_commands(parser):
        name = " ".join(path)
        if not (help_ or "").strip():
            problems.append(f"{name}: no help")
        if not (sub.description or "").strip():
            problems.append(f"{name}: no description")
    return problems


COMMANDS = [path for path, _, _ in all_commands(build_parser())]


class TestHelpText:
    def test_every_command_has_help_and_description(self):
        """Every command and nested action has a one-line help and a description."""
        assert len(COMMANDS) >= 4
        assert help_problems(build_parser()) == []

    def test_a_command_without_help_is_caught(self):
        """The check fails for a parser that has a command added without help or description."""
        p = build_parser()
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        sub.add_parser("mystery")
        assert help_problems(p) == ["mystery: no help", "mystery: no description"]

    def test_top_level_commands_have_examples(self):
        """Each top-level command's help ends with examples (an epilog starting 'examples:')."""
        heads = ("examples:\n  auditd-lite ", "examples (as root):\n  auditd-lite ")
        lacking = [name for name, _, sub in subcommands(build_parser())
                   if not (sub.epilog or "").startswith(heads)]
        assert lacking == []

    @pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
    def test_help_exits_zero(self, path):
        """`auditd-lite COMMAND --help` exits 0 and prints its usage and description."""
        p = run_cli(*path, "--help", check=0)
        out = p.stdout.decode()
        assert out.startswith(f"usage: auditd-lite {' '.join(path)}")
        assert p.stderr == b""

    def test_top_level_help_lists_every_command(self):
        """`auditd-lite --help` exits 0 and names every top-level command with its help."""
        out = run_cli("--help", check=0).stdout.decode()
        for name, help_, _ in subcommands(build_parser()):
            assert name in out and help_.split()[0] in out


class TestManPage:
    def test_covers_every_command_and_option(self):
        """The man page has a section for every command and mentions every long option."""
        page = render(date="2026-01-01")
        for path, _, sub in all_commands(build_parser()):
            assert f".SS {' '.join(path)}\n" in page
            for action in sub._actions:
                for opt in action.option_strings:
                    if opt.startswith("--") and opt != "--help":
                        assert opt.replace("-", "\\-") in page, (path, opt)

    @pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
    def test_renders_without_warnings(self, tmp_path):
        """man -l renders the page with no groff warnings."""
        page = tmp_path / "auditd-lite.1"
        page.write_text(render())
        p = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True,
                           env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
        assert p.returncode == 0 and p.stderr == b"", p.stderr
        assert b"EXIT STATUS" in p.stdout and b"auditd-lite query" in p.stdout
