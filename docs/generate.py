"""The references that must not drift from the code, generated from it.

``make docs`` (``python -m docs.generate``) rewrites the README between its marker comments
(``<!-- settings:begin -->`` ... ``<!-- settings:end -->``: the configuration tables, from the
pydantic-settings classes; ``<!-- cli:begin -->`` ... ``<!-- cli:end -->``: the command table,
from the ``skein`` typer app) and writes ``docs/cli.md`` whole (every command with its options).
``tests/unit/test_docs.py`` regenerates and fails on any difference, so the text to edit is in
the code: a field's ``Field(description=...)``, a settings class's docstring, a command's
docstring and its options' ``help``.

Variable names are the ones pydantic-settings reads: a field's ``validation_alias``, else its
class's ``env_prefix`` + the field name, upper-cased. A settings class without a prefix of its
own whose subclasses have one (the loaders' common settings) is documented once under a
template prefix (``SKEIN_LOADER_<TYPE>_``); a field whose default differs between the
subclasses, or that only one has, gets one row per subclass. A secret (``SecretStr``) or a
computed default is never printed: such a field names what to show in
``json_schema_extra={"doc_default": ...}`` (the generator refuses it otherwise), as may any
field whose default on the local stack is not the code's.

Over 400 lines on purpose: one generator for both references, whose settings half (names,
defaults, per-loader rows) and command half share the row and table rendering; neither is
imported by the services.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import typer.main
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from typer.core import TyperArgument, TyperGroup, TyperOption

from common.settings import SharedSettings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"
TEMPLATE = "<TYPE>"


class DocError(ValueError):
    """The code lacks something the references need (a description, a shown default)."""


@dataclass(frozen=True)
class Row:
    variable: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Variable:
    """A variable read outside the settings classes (a shell script, ``env_file()``); the
    generator checks that ``read_by`` still mentions it."""

    name: str
    default: str
    meaning: str
    read_by: str

    def row(self) -> Row:
        if self.name not in (ROOT / self.read_by).read_text():
            raise DocError(f"{self.read_by} no longer reads {self.name}: update docs/generate.py")
        return Row(self.name, self.default, f"{self.meaning} (read by `{self.read_by}`)")


# Read before any settings class, by every service.
ENV_FILE = Variable(
    "SKEIN_ENV_FILE",
    "`.run/skein.env` when `SKEIN_ENV=local` and it exists",
    "env file read below the environment (empty: none); the stack's services get none",
    "common/settings.py",
)
LOCAL_STACK = (
    Variable("SKEIN_KAFKA_HEAP", "`512m`", "max heap of each Kafka node", "deploy/local/stack.sh"),
    Variable(
        "SKEIN_KAFKA_JVM_OPTS",
        "`-XX:TieredStopAtLevel=1`",
        "more JVM options of each Kafka node, separated by spaces; the default compiles with C1 "
        "only (C2's compiles cost a just-started broker more than they save on this stack); "
        "empty: C2",
        "deploy/local/stack.sh",
    ),
    Variable("SKEIN_RUN_DIR", "`.run`", "runtime data and logs", "deploy/local/stack.sh"),
    Variable("SKEIN_CACHE_DIR", "`.cache`", "downloaded Kafka jars", "deploy/local/stack.sh"),
    Variable(
        "SKEIN_LOADERS",
        "`postgres`",
        "the loaders `make up` runs, comma-separated (postgres, redshift, bigquery, snowflake, "
        "iceberg)",
        "deploy/local/stack.sh",
    ),
    Variable(
        "SKEIN_SCALE",
        "`1`",
        "instances of every Skein service `make up` runs (2+: the gate, spool and control"
        " behind HAProxy on their usual ports); remembered for later `stack.sh` commands",
        "deploy/local/stack.sh",
    ),
    Variable(
        "SKEIN_HELM_CACHE",
        "`${XDG_CACHE_HOME:-~/.cache}/skein`",
        "(tests) where Helm built for the chart's tests is cached, per version",
        "deploy/local/helm.sh",
    ),
    Variable(
        "SKEIN_BQ_EMULATOR_CACHE",
        "`${XDG_CACHE_HOME:-~/.cache}/skein`",
        "(tests) where the BigQuery emulator built for the tests is cached, per version",
        "deploy/local/bigquery-emulator.sh",
    ),
)


# Settings ---------------------------------------------------------------------------------


def settings_classes() -> list[type[SharedSettings]]:
    """Every settings class of the project: each ``settings.py`` under ``services/`` is
    imported, then the subclasses of ``SharedSettings`` defined in ``services`` collected."""
    for path in sorted((ROOT / "services").rglob("settings.py")):
        importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    found: list[type[SharedSettings]] = []
    pending: list[type[SharedSettings]] = [SharedSettings]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("services.") and sub not in found:
                found.append(sub)
                pending.append(sub)
    return found


def prefix_of(cls: type[SharedSettings]) -> str:
    return str(cls.model_config.get("env_prefix", ""))


def variable_name(cls: type[SharedSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    if alias is not None:
        raise DocError(f"{cls.__name__}.{name}: only a plain string alias is documented")
    return f"{prefix_of(cls)}{name}".upper()


def template_prefix(prefixes: Iterable[str]) -> str:
    """``SKEIN_LOADER_POSTGRES_``, ``SKEIN_LOADER_BIGQUERY_`` -> ``SKEIN_LOADER_<TYPE>_``:
    the words all share at the start and at the end, ``<TYPE>`` between."""
    words = [p.split("_") for p in prefixes]
    head: list[str] = []
    for parts in zip(*words, strict=False):
        if len(set(parts)) > 1:
            break
        head.append(parts[0])
    tail: list[str] = []
    shortest = min(len(w) for w in words)
    for parts in zip(*(reversed(w[len(head) :]) for w in words), strict=False):
        if len(set(parts)) > 1 or len(head) + len(tail) >= shortest - 1:
            break
        tail.insert(0, parts[0])
    return "_".join([*head, TEMPLATE, *tail])


def shown_default(where: str, name: str, field: FieldInfo) -> str:
    """The default as the table shows it: ``doc_default`` when the field gives one; never a
    secret's value, nor a default computed on this machine."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "doc_default" in extra:
        return str(extra["doc_default"])
    value = field.default
    if field.default_factory is not None or isinstance(value, SecretStr):
        raise DocError(f'{where}: give json_schema_extra={{"doc_default": ...}} to show')
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    shown = f"`{value}`"
    if "bytes" in name and isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        shown += f" ({binary_size(value)})"
    return shown


def binary_size(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} B"


def meaning(where: str, *fields: FieldInfo) -> str:
    """The first description among ``fields`` (a subclass's, then its base's)."""
    for field in fields:
        if field.description:
            return " ".join(field.description.split())
    raise DocError(f"{where}: give the field a Field(description=...)")


def own_fields(cls: type[SharedSettings]) -> Iterator[tuple[str, FieldInfo]]:
    """The fields a service class adds to the shared ones, in declaration order."""
    for name, field in cls.model_fields.items():
        if name not in SharedSettings.model_fields:
            yield name, field


def rows_of(cls: type[SharedSettings]) -> list[Row]:
    return [
        Row(
            variable_name(cls, name, field),
            shown_default(f"{cls.__name__}.{name}", name, field),
            meaning(f"{cls.__name__}.{name}", field),
        )
        for name, field in own_fields(cls)
    ]


def template_rows(base: type[SharedSettings], subs: list[type[SharedSettings]]) -> list[Row]:
    """The base's fields under the template prefix, then what differs by subclass."""
    template = template_prefix(prefix_of(s) for s in subs)
    rows: list[Row] = []
    per_type: set[str] = set()
    for name, field in own_fields(base):
        where = f"{base.__name__}.{name}"
        defaults = {shown_default(where, name, s.model_fields[name]) for s in subs}
        if len(defaults) > 1:
            per_type.add(name)
            default = "per type, below"
        else:
            (default,) = defaults
        rows.append(Row(f"{template}{name}".upper(), default, meaning(where, field)))
    for sub in subs:
        for name, field in own_fields(sub):
            if name in base.model_fields and name not in per_type:
                continue
            where = f"{sub.__name__}.{name}"
            inherited = [base.model_fields[name]] if name in base.model_fields else []
            rows.append(
                Row(
                    variable_name(sub, name, field),
                    shown_default(where, name, field),
                    meaning(where, field, *inherited),
                )
            )
    return rows


def first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n")[0]
    return " ".join(text.replace("``", "`").split())


def runs_as(cls: type[SharedSettings]) -> str:
    """``python -m PACKAGE`` when the class's package has a ``__main__``."""
    package = cls.__module__.rsplit(".", 1)[0]
    main = ROOT.joinpath(*package.split("."), "__main__.py")
    return f"`python -m {package}`" if main.is_file() else ""


def table(rows: Iterable[Row]) -> list[str]:
    lines = ["| variable | default (local stack) | meaning |", "|---|---|---|"]
    lines += [
        f"| `{r.variable}` | {cell(r.default, escape=False)} | {cell(r.meaning)} |" for r in rows
    ]
    return lines


def settings_markdown(cli_rows: list[Row]) -> str:
    """The configuration tables: shared variables, then each service's (by prefix), then the
    variables only ``skein`` commands or the local stack's scripts read."""
    classes = settings_classes()
    blocks: list[list[str]] = []
    shared_rows = [
        Row(
            variable_name(SharedSettings, name, field),
            shown_default(f"SharedSettings.{name}", name, field),
            meaning(f"SharedSettings.{name}", field),
        )
        for name, field in SharedSettings.model_fields.items()
    ]
    blocks.append(
        [
            f"**Shared**: {first_paragraph(SharedSettings.__doc__)}",
            "",
            *table([*shared_rows, ENV_FILE.row()]),
        ]
    )
    services = [c for c in classes if SharedSettings in c.__bases__]
    subclasses = {
        cls: sorted((c for c in classes if cls in c.__bases__), key=prefix_of) for cls in services
    }

    def section_prefix(cls: type[SharedSettings]) -> str:
        return prefix_of(cls) or template_prefix(prefix_of(s) for s in subclasses[cls] or [cls])

    for cls in sorted(services, key=section_prefix):
        subs = subclasses[cls]
        if prefix_of(cls):
            run = runs_as(cls)
            intro = f"**`{prefix_of(cls)}*`**: {first_paragraph(cls.__doc__)}"
            intro += f" Runs as {run}." if run else ""
            blocks.append([intro, "", *table(rows_of(cls))])
        elif subs:
            template = template_prefix(prefix_of(s) for s in subs)
            each = ", ".join(f"{runs_as(s)} (`{prefix_of(s)}*`)" for s in subs)
            intro = f"**`{template}*`**: {first_paragraph(cls.__doc__)} Each runs as {each}."
            blocks.append([intro, "", *table(template_rows(cls, subs))])
        else:
            raise DocError(f"{cls.__name__} has no env_prefix and no subclass that has one")
    blocks.append(
        [
            "**Read by `skein` commands** (an option's default) **and by the local stack's "
            "scripts**:",
            "",
            *table([*cli_rows, *(v.row() for v in LOCAL_STACK)]),
        ]
    )
    return "\n\n".join("\n".join(block) for block in blocks)


def settings_variables() -> set[str]:
    names = {variable_name(SharedSettings, n, f) for n, f in SharedSettings.model_fields.items()}
    for cls in settings_classes():
        if prefix_of(cls):
            names |= {variable_name(cls, n, f) for n, f in own_fields(cls)}
    return names


# CLI --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    path: str
    command: typer.core.TyperCommand
    context: typer.Context


def cli_root() -> TyperGroup:
    from services.control.cli import app

    root = typer.main.get_command(app)
    if not isinstance(root, TyperGroup):
        raise DocError("the skein app is expected to be a group of commands")
    return root


def commands(group: TyperGroup, context: typer.Context, path: str) -> Iterator[Command]:
    """Every visible command under ``group``, depth first in the order they were added."""
    for name, sub in group.commands.items():
        if sub.hidden:
            continue
        child = typer.Context(sub, info_name=name, parent=context)
        if isinstance(sub, TyperGroup):
            yield from commands(sub, child, f"{path} {name}")
        elif isinstance(sub, typer.core.TyperCommand):
            yield Command(f"{path} {name}", sub, child)


def parameters(cmd: Command) -> Iterator[TyperArgument | TyperOption]:
    for param in cmd.command.params:
        if (
            isinstance(param, TyperArgument | TyperOption)
            and param.name != "help"
            and not param.hidden
        ):
            yield param


def metavar(param: TyperArgument | TyperOption, context: typer.Context) -> str:
    if param.metavar:
        return param.metavar
    if isinstance(param, TyperArgument):
        return str(param.name).upper()
    if any(kind in param.display_type(context) for kind in ("int", "float")):
        return "N"
    return param.opts[0].lstrip("-").replace("-", "_").upper()


def synopsis(cmd: Command) -> str:
    """``skein clients set-limits CLIENT_ID [--rps N] ... [--reset RESET ...]``."""
    words = [cmd.path]
    for param in parameters(cmd):
        if isinstance(param, TyperArgument):
            word = metavar(param, cmd.context)
        elif param.is_flag:
            word = param.opts[0]
        else:
            word = f"{param.opts[0]} {metavar(param, cmd.context)}"
            word += " ..." if param.multiple else ""
        words.append(word if param.required else f"[{word}]")
    return " ".join(words)


def paragraphs(text: str | None) -> list[str]:
    """Help text's paragraphs, each on one line; reST literals (double backquotes) as
    Markdown's."""
    text = (text or "").replace("``", "`")
    return [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]


def prose(text: str) -> str:
    """Help text as Markdown: backquoted spans stay as they are; elsewhere ``<``, ``>`` and
    ``*`` are literal characters, not HTML or emphasis."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"([*<>])", r"\\\1", parts[i])
    return "`".join(parts)


def cell(text: str, *, escape: bool = True) -> str:
    return (prose(text) if escape else text).replace("|", "\\|")


def option_default(param: TyperArgument | TyperOption) -> str:
    value: Any = param.default
    shown = ""
    if value not in (None, False, "", [], ()) and not callable(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        shown = f"`{value}`"
    if isinstance(param, TyperOption) and isinstance(param.envvar, str):
        shown = f"{shown}, env `{param.envvar}`" if shown else f"env `{param.envvar}`"
    return shown


def cli_table_markdown(root: TyperGroup) -> str:
    lines = ["| command | does |", "|---|---|"]
    for cmd in commands(root, typer.Context(root, info_name="skein"), "skein"):
        does = (paragraphs(cmd.command.help) or [""])[0]
        lines.append(f"| `{cell(synopsis(cmd), escape=False)}` | {cell(does)} |")
    return "\n".join(lines)


def cli_reference_markdown(root: TyperGroup) -> str:
    """docs/cli.md: each group with its help, each command with its synopsis, full help and
    a table of its arguments and options."""
    context = typer.Context(root, info_name="skein")
    out = [
        "# `skein` command reference",
        "",
        "<!-- Generated by `make docs` from services/control/cli/: edit the commands' "
        "docstrings and options' help there, not this file. -->",
        "",
        *text_block(root.help),
    ]
    for name, sub in root.commands.items():
        if sub.hidden:
            continue
        child = typer.Context(sub, info_name=name, parent=context)
        if isinstance(sub, TyperGroup):
            out += [f"## `skein {name}`", "", *text_block(sub.help)]
            out += [line for cmd in commands(sub, child, f"skein {name}") for line in section(cmd)]
        elif isinstance(sub, typer.core.TyperCommand):
            out += section(Command(f"skein {name}", sub, child), "##")
    return "\n".join(out).rstrip() + "\n"


def text_block(text: str | None) -> list[str]:
    return [line for p in paragraphs(text) for line in (prose(p), "")]


def section(cmd: Command, heading: str = "###") -> list[str]:
    out = [f"{heading} `{cmd.path}`", "", "```", synopsis(cmd), "```", ""]
    out += text_block(cmd.command.help)
    rows = [
        f"| `{cell(name_of(p, cmd.context), escape=False)}` | {cell(p.help or '')} "
        f"| {cell(option_default(p) or ('required' if p.required else ''), escape=False)} |"
        for p in parameters(cmd)
    ]
    if rows:
        out += ["| argument / option | meaning | default |", "|---|---|---|", *rows, ""]
    return out


def name_of(param: TyperArgument | TyperOption, context: typer.Context) -> str:
    if isinstance(param, TyperArgument):
        return metavar(param, context) + ("" if param.required else " (optional)")
    names = " / ".join([*param.opts, *param.secondary_opts])
    if param.is_flag:
        return names
    return f"{names} {metavar(param, context)}" + (" (repeatable)" if param.multiple else "")


def cli_variable_rows(root: TyperGroup) -> list[Row]:
    """Options that read an environment variable no settings class documents."""
    documented = settings_variables()
    rows: list[Row] = []
    for cmd in commands(root, typer.Context(root, info_name="skein"), "skein"):
        for param in parameters(cmd):
            if not isinstance(param, TyperOption) or not isinstance(param.envvar, str):
                continue
            if param.envvar in documented:
                continue
            help_text = (param.help or "").rstrip(".")
            if not help_text:
                raise DocError(f"{cmd.path} {param.opts[0]}: give the option a help text")
            rows.append(
                Row(
                    param.envvar,
                    f"`{param.default}`",
                    f"{help_text[0].lower()}{help_text[1:]} (`{cmd.path} {param.opts[0]}`)",
                )
            )
    return rows


# Files ------------------------------------------------------------------------------------


def between(text: str, name: str, body: str) -> str:
    """``text`` with what lies between ``<!-- name:begin -->`` and ``<!-- name:end -->``
    replaced by ``body``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise DocError(f"README.md lacks the markers {begin} ... {end}")
    return f"{text[: start + len(begin)]}\n{body}\n{text[stop:]}"


def expected() -> dict[Path, str]:
    """Each generated file's content as the code says it should be."""
    root = cli_root()
    readme = README.read_text()
    readme = between(readme, "settings", settings_markdown(cli_variable_rows(root)))
    readme = between(readme, "cli", cli_table_markdown(root))
    return {README: readme, CLI_DOC: cli_reference_markdown(root)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only say which files differ")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected().items():
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(text)
    verb = "out of date" if args.check else "rewritten"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
