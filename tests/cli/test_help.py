"""The command line's own words: every command listed on one line that ends a sentence, every option
with help that is whole sentences and says what happens when it is left out."""

import re

import typer
from typer.testing import CliRunner

from melanoma.cli import app

ROOT = typer.main.get_command(app)


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_option_says_what_it_does_and_its_default():
    problems = []
    for name, command in _commands(ROOT):
        if not (command.help or "").strip():
            problems.append(f"{name}: no docstring")
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            text = re.sub(r"\s*\(default: [^)]*\)$", "", (param.help or "").strip())  # train's own suffix
            if not text:
                problems.append(f"{name} --{param.name}: no help")
            elif not re.search(r"[.?!]\)?$", text):
                problems.append(f"{name} --{param.name}: not a whole sentence: {text!r}")
            if param.default is None and not param.required and "default" not in (param.help or "").lower():
                problems.append(f"{name} --{param.name}: says nothing of what happens without it: {text!r}")
    assert problems == []


def _listed(args) -> dict[str, str]:
    """The Commands panel of `melanoma ARGS --help`: each command's text, wrapped lines joined."""
    out = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "120"}).output
    panel = out.split("Commands")[1]
    entries: dict[str, str] = {}
    for line in panel.splitlines():
        inner = line.strip().strip("│╰─╯").rstrip()
        start = re.match(r" ([a-z][a-z-]*) {2,}(\S.*)", inner)
        if start:
            name = start.group(1)
            entries[name] = start.group(2).strip()
        elif inner.strip() and entries:
            entries[name] += " " + inner.strip()
    return entries


def test_the_command_list_gives_each_command_its_first_sentence():
    from melanoma.cli import first_sentence

    for args, group in [
        ((), ROOT),
        (("ablate",), ROOT.commands["ablate"]),
        (("bench",), ROOT.commands["bench"]),
    ]:
        listed = _listed(args)
        assert sorted(listed) == sorted(group.commands), listed
        for name, text in listed.items():
            command = group.commands[name]
            if hasattr(command, "commands"):
                continue
            sentence = first_sentence(command.help)
            assert text == sentence and re.search(r"[.)]$", text), (name, text)
            assert "\n" not in sentence and len(sentence) < len(" ".join(command.help.split())) + 1
    assert (
        first_sentence("Train folds of a model. Settings: defaults < --preset.\n\nMore.")
        == "Train folds of a model."
    )
    assert first_sentence("Scores (e.g. AUC) per\nfold.") == "Scores (e.g. AUC) per fold."
