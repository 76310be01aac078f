"""What the `restorebench` command (restorebench.cli) is built on: typer classes that print a known failure as
one line, accept the global options after the subcommand too and write help that reads at 80 columns; and
`config show`'s notes on what a 0 means.

    restorebench --debug finetune ...     # the same run as
    restorebench finetune ... --debug
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Iterable

import click
import typer
from typer.core import TyperCommand, TyperGroup

from restorebench.errors import RestorebenchError


def debug_enabled() -> bool:
    """--debug (anywhere on the line) or RESTOREBENCH_DEBUG=1: a known failure keeps its traceback."""
    return os.environ.get("RESTOREBENCH_DEBUG", "") not in ("", "0")


def choices(values: Iterable[str]) -> str:
    """A choice list for --help, `[a | b | c]`: the spaces let the help table wrap it between choices, never
    inside one (typer folds a metavar without spaces at any character)."""
    return "[" + " | ".join(values) + "]"


class _PlainFlags:
    """A flag takes no value, so its help shows no type (typer's rich help would print `<bool>`)."""

    def get_params(self, ctx: click.Context) -> list:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # typer prints the metavar, when set, in place of the type
        return params


def reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as single lines, for the help to wrap at the terminal's width (typer's rich
    help joins the first paragraph's lines only). Indented paragraphs (examples) keep their lines."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith((" ", "\b")) else " ".join(p.splitlines()) for p in paragraphs)


class Command(_PlainFlags, TyperCommand):
    """Every subcommand's class (`@app.command(cls=Command)`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)


class SubGroup(_PlainFlags, TyperGroup):
    """A group of subcommands under the main one (`restorebench config`, `restorebench pipeline`)."""


class Group(SubGroup):
    """The main command. Prints a known failure (RestorebenchError) as one line and exits with its code (1;
    143 for a preempted run); the traceback only with --debug or RESTOREBENCH_DEBUG=1. Other exceptions are
    bugs and keep their traceback. Here, not around the app, so `CliRunner` tests see what users see.

    The global options (its own, but the eager --version and --help) may follow the subcommand: they are
    moved in front of it before parsing. No subcommand reuses one of their names (tests/test_cli_polish.py
    walks the commands)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RestorebenchError as err:
            if debug_enabled():
                raise
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            ctx.exit(err.exit_code)

    def global_options(self) -> dict[str, bool]:
        """Each global option's names -> whether it takes a value."""
        names: dict[str, bool] = {}
        for param in self.params:
            if param.param_type_name == "option" and not param.is_eager:
                for name in (*param.opts, *param.secondary_opts):
                    names[name] = not param.is_flag
        return names

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args), self.global_options()))


def hoist_global_options(args: list[str], options: dict[str, bool]) -> list[str]:
    """`args` with every global option (and its value) found after the subcommand moved in front of it, in
    their order; nothing after a `--` moves. `options`: option name -> takes a value. Handles `--name value`,
    `--name=value` and, for a one-letter option, `-Svalue`."""

    def split(token: str) -> tuple[str | None, bool]:
        """(the option `token` names, whether its value is inside the token)."""
        if token in options:
            return token, False
        if token.startswith("--") and "=" in token and token.split("=", 1)[0] in options:
            return token.split("=", 1)[0], True
        if len(token) > 2 and token[0] == "-" and token[1] != "-" and options.get(token[:2]):
            return token[:2], True
        return None, False

    i = 0
    while i < len(args):  # the options before the subcommand stay where they are
        name, inline = split(args[i])
        if name is None:
            if not args[i].startswith("-"):
                break  # the subcommand
            i += 1
        else:
            i += 1 if inline or not options[name] else 2
    head, rest, moved = args[:i], args[i:], []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        token = rest[j]
        if token == "--":
            kept += rest[j:]
            break
        name, inline = split(token)
        if name is None:
            kept.append(token)
            j += 1
        elif inline or not options[name]:
            moved.append(token)
            j += 1
        else:
            moved += rest[j : j + 2]
            j += 2
    return head + moved + kept


# ---------------------------------------------------------------------------------------------- config show


def field_notes(cls: type) -> dict[str, str]:
    """What a zero means for each field of the dataclass `cls` whose comment says (`# ...; 0: train.steps`):
    field name -> the text after `0:` (or `0 =`), from the field's own comment or the comment lines above it.
    The schema's comments are the one home of these meanings (restorebench.schema)."""
    notes: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        field = re.match(r"(\w+): [^=#]+=[^#]*(?:#\s*(.*))?$", text)
        if field:
            comment = field.group(2) or " ".join(above)
            zero = re.search(r"(?:^|[;,(]\s*|\s)0(?::| =) (.+)$", comment)
            if zero:
                notes[field.group(1)] = zero.group(1).strip()
        above = []
    return notes


def annotate_zeros(text: str, root: object) -> str:
    """`text`, the YAML dump of `root` (a dataclass tree: restorebench.config.Config or one section of it),
    with `# 0: <meaning>` (or what sets it instead) after each mapping key whose value is 0 and whose field's comment says what 0 means;
    a meaning that names another setting (`train.steps`) gets that setting's value (`here 80`)."""
    out, stack = [], []  # stack: (indent, key) of the open mappings
    for line in text.splitlines():
        m = re.match(r"( *)(?:- )?(\w+):( .*)?$", line)
        if m is None:
            out.append(line)
            continue
        indent = len(m.group(1)) + (2 if line.lstrip().startswith("- ") else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m.group(2)]
        stack.append((indent, m.group(2)))
        value = (m.group(3) or "").strip()
        note = _zero_note(root, path) if value in ("0", "0.0") else None
        out.append(f"{line}  # {note}" if note else line)
    return "\n".join(out)


def _zero_note(root: object, path: list[str]) -> str | None:
    parent = _walk(root, path[:-1])
    if parent is None or not dataclasses.is_dataclass(parent):
        return None
    note = field_notes(type(parent)).get(path[-1])
    if note is None:
        return None
    stages = getattr(parent, "stages", None)  # a progressive recipe: its stages set steps, batch and patch
    if stages and path[-1] in ("steps", "batch", "patch"):
        per_stage = [getattr(st, "iters" if path[-1] == "steps" else path[-1]) for st in stages]
        return f"set by its stages: {sum(per_stage)} steps" if path[-1] == "steps" else f"set by its stages: {per_stage}"
    ref = re.match(r"((?:\w+\.)+\w+)", note)  # a setting it stands for, e.g. train.steps
    value = _walk(root, ref.group(1).split(".")) if ref else None
    return f"0: {note}" + (f"; here {value}" if isinstance(value, int | float) and not isinstance(value, bool) else "")


def _walk(node: object, path: list[str]) -> object:
    for key in path:
        if dataclasses.is_dataclass(node) and hasattr(node, key):
            node = getattr(node, key)
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node
