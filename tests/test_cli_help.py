"""`--help` of every command: an example that uses only real options, required options marked, plain text (a config
table such as "[bench]" shown as written, not swallowed as markup), and lists that come from the registries."""

from __future__ import annotations

import re

import pytest
import typer
from test_cli import fastforget

from fastforget import cli
from fastforget.metrics.registry import METRICS
from fastforget.unlearn import METHODS


def commands() -> dict:
    """Every leaf command by its full name ("train", "data prepare", ...)."""
    found = {}

    def walk(group, prefix: str) -> None:  # typer's own click: groups are told by their commands
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(typer.main.get_command(cli.app), "")
    return found


COMMANDS = commands()


def option_help(out: str, opts: list[str]) -> str:
    """The lines of `--help` that describe one option: from its line to the next option's."""
    lines = out.split("Options:")[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() and line.split()[0].rstrip(",") in opts)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("-")), len(lines))
    return "\n".join(lines[start:end])


def test_every_command_is_covered():
    assert {"train", "unlearn", "eval", "bench", "audit", "demo", "data prepare"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_has_a_working_example_and_marks_required_options(name):
    result = fastforget(*name.split(), "--help")
    assert result.code == 0, result.err
    examples = re.findall(rf"^\s*(?:Example: )?(fastforget {name} .*)$", result.out.split("Options:")[0], re.M)
    assert examples, f"`fastforget {name} --help` shows no example"
    options = {opt for param in COMMANDS[name].params for opt in param.opts}
    for example in examples:
        used = set(re.findall(r"(?<!\S)(--?[a-z][\w-]*)", example))
        assert used <= options, f"the example {example!r} uses options {used - options} that {name} does not have"
    for param in COMMANDS[name].params:
        if param.param_type_name == "option" and param.opts[-1] != "--help":
            marked = "[required]" in " ".join(option_help(result.out, param.opts).split())
            assert marked == param.required, f"{name}: {param.opts[-1]} required={param.required}, help says {marked}"
    assert "\x1b[" not in result.out  # plain text, no escape codes


def test_plain_help_text_shows_config_tables_and_registry_lists():
    bench = " ".join(fastforget("bench", "--help").out.split())
    assert "the config's [bench]" in bench  # Rich markup would swallow "[bench]"
    assert ",".join(METRICS) in bench  # the metric list comes from the registry
    unlearn = " ".join(fastforget("unlearn", "--help").out.split())
    assert all(name in unlearn for name in ("rwft-2-o", "--method")) and len(METHODS) > 10
    data = " ".join(fastforget("data", "prepare", "--help").out.split())
    assert 'data.loader = "ffcv"' in data
