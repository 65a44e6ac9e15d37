"""MkDocs hook: the Reference pages, generated from the code at every build so they cannot drift.

- one page per console script of pyproject.toml's [project.scripts], from its argparse parser (every
  argument, its default and its help; subcommands too). Only the cli module is imported, and only its
  parser builder is called: `build_parser()` (`build_parser(command)` per subcommand where the module
  lists COMMANDS), else the parser that `parse_args(argv)` builds, caught before it parses anything.
  A Hydra app (`@hydra.main`, phiscale-train) gets its usage, its groups and Hydra's own flags.
- one page per config group under conf/ (every key of every option, its default and its comment, read
  from the YAML source with its line numbers), the primary config (train.yaml), and the `model` group
  that phiscale.config generates from the model table.

mkdocs.yml names this file under `hooks:`; the pages are added to the "Reference" section of its nav.
The plots under benchmarks/results/ are served as results/... (the pages that show them link there).
A console script whose module has no parser to read fails the build, naming the module.
"""

from __future__ import annotations

import argparse
import html
import importlib
import inspect
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
REFERENCE = "Reference"  # the nav section the generated pages join
log = logging.getLogger("mkdocs.hooks.reference")

_pages: dict[str, str] = {}  # src path (docs-relative) -> markdown, made in on_config, served in on_files


# ------------------------------------------------------------------------------------ mkdocs events ----
def on_config(config):
    sys.path.insert(0, str(ROOT / "src"))  # a checkout without `pip install -e .` still builds
    _pages.clear()
    cli_nav, conf_nav = [], []
    for script, target in console_scripts().items():
        path = f"reference/cli/{script}.md"
        _pages[path] = cli_page(script, target)
        cli_nav.append({script: path})
    for group in config_groups():
        path = f"reference/config/{group.slug}.md"
        _pages[path] = config_page(group)
        conf_nav.append({group.title: path})
    section = next((item for item in config.nav or [] if isinstance(item, dict) and REFERENCE in item), None)
    if section is None:
        raise SystemExit(f"mkdocs.yml: the nav has no '{REFERENCE}' section for the generated pages")
    if not isinstance(section[REFERENCE], list):
        section[REFERENCE] = [section[REFERENCE]]
    section[REFERENCE] += [{"Command line": cli_nav}, {"Configuration": conf_nav}]
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in _pages.items():
        files.append(File.generated(config, path, content=content))
    for figure in sorted((ROOT / "benchmarks" / "results").rglob("*.png")):  # the measured studies' plots
        src = "results/" + figure.relative_to(ROOT / "benchmarks" / "results").as_posix()
        files.append(File.generated(config, src, abs_src_path=str(figure)))
    return files


# ------------------------------------------------------------------------------------ console scripts ---
def console_scripts() -> dict[str, str]:
    """{script: 'module:function'} as pyproject.toml declares them (as installed, on Python 3.10)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed package's entry points (scripts/setup.sh keeps them current)
        from importlib.metadata import distribution

        return {e.name: e.value for e in distribution("phiscale").entry_points if e.group == "console_scripts"}
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parsers_of(module) -> list[argparse.ArgumentParser]:
    """The module's parsers without running its command: build_parser() (one per subcommand where it
    takes the command's name), else the one its parse_args(argv) builds, stopped before parsing."""
    build = getattr(module, "build_parser", None)
    if build is not None:
        if inspect.signature(build).parameters and hasattr(module, "COMMANDS"):
            return [build()] + [build(command) for command in module.COMMANDS]
        return [build()]
    if hasattr(module, "parse_args"):
        def catch(self, *args, **kwargs):
            raise _Caught(self)

        methods = ("parse_args", "parse_known_args", "parse_intermixed_args")
        saved = {name: getattr(argparse.ArgumentParser, name) for name in methods}
        try:
            for name in methods:
                setattr(argparse.ArgumentParser, name, catch)
            module.parse_args([])
        except _Caught as caught:
            return [caught.parser]
        finally:
            for name, method in saved.items():
                setattr(argparse.ArgumentParser, name, method)
    return []


def cli_page(script: str, target: str) -> str:
    module_name = target.split(":")[0]
    if module_name in sys.modules:  # `mkdocs serve` rebuilding after an edit: read the parser anew
        module = importlib.reload(sys.modules[module_name])
    else:
        module = importlib.import_module(module_name)
    doc = (inspect.getdoc(module) or "").strip()
    head = [f"# {script}", "", f"*Generated from `{module_name}` at build time.* {md_text(first_line(doc))}", ""]
    parsers = parsers_of(module)
    if parsers:
        body = []
        overview, *commands = parsers
        body += parser_section(overview, level=2, title=False)
        for parser in commands:
            body += parser_section(parser, level=2, title=True)
        return "\n".join(head + body) + "\n"
    if "hydra.main" in inspect.getsource(module):
        return "\n".join(head + hydra_section(script)) + "\n"
    raise SystemExit(f"docs/hooks/reference.py: {module_name} ({script}) has no build_parser() or parse_args(argv) "
                     "to read its arguments from, and is no Hydra app: add a build_parser()")


def parser_section(parser: argparse.ArgumentParser, level: int, title: bool) -> list[str]:
    """Usage, description, a table of positionals and one of options, then each subcommand."""
    lines: list[str] = []
    if title:
        lines += [f"{'#' * level} `{parser.prog}`", ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        lines += [md_text(parser.description), ""]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    exclusive = {id(a): group for group in parser._mutually_exclusive_groups for a in group._group_actions}
    positionals = [a for a in parser._actions if not a.option_strings and a not in subparsers]
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    formatter = parser._get_formatter()
    if positionals:
        lines += ["| argument | default | description |", "| --- | --- | --- |"]
        lines += [argument_row(parser, formatter, a, exclusive) for a in positionals] + [""]
    if options:
        lines += ["| option | default | description |", "| --- | --- | --- |"]
        lines += [argument_row(parser, formatter, a, exclusive) for a in options] + [""]
    for action in subparsers:
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        lines += ["| command | description |", "| --- | --- |"]
        lines += [f"| `{name}` | {cell(helps.get(name) or '')} |" for name in action.choices] + [""]
        for sub in action.choices.values():
            if sub._actions[1:] or sub.description:  # a placeholder (the overview's list) has only -h
                lines += parser_section(sub, level + 1, title=True)
    if parser.epilog:
        lines += ["```text", parser.epilog.strip(), "```", ""]
    return lines


def argument_row(parser, formatter, action: argparse.Action, exclusive: dict) -> str:
    if action.option_strings:
        names = ", ".join(f"`{s}`" for s in action.option_strings)
        if action.nargs != 0:
            names += f" `{formatter._format_args(action, formatter._get_default_metavar_for_optional(action))}`"
    else:
        names = f"`{formatter._format_args(action, formatter._get_default_metavar_for_positional(action))}`"
    help_text = expand_help(parser, action)
    notes = []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        notes.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if action.required and action.option_strings:
        notes.append("required")
    if id(action) in exclusive:
        others = [a.option_strings[0] for a in exclusive[id(action)]._group_actions if a is not action]
        kind = "exactly one" if exclusive[id(action)].required else "at most one"
        notes.append(f"{kind} of this and " + ", ".join(f"`{o}`" for o in others))
    description = " ".join([md_text(help_text)] + [f"({n})" for n in notes]).strip()
    return f"| {names} | {cell(default_text(action))} | {cell(description, escaped=True)} |"


def expand_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as --help prints it (`%(default)s` filled in); Hydra's lazy help objects as strings."""
    if not action.help or action.help is argparse.SUPPRESS:
        return ""
    text = str(action.help)
    params = {k: getattr(v, "__name__", v) for k, v in vars(action).items()} | {"prog": parser.prog}
    try:
        return text % params
    except (KeyError, TypeError, ValueError):
        return text


def default_text(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if isinstance(action, argparse._StoreFalseAction):
        return "on"
    default = action.default
    if default is None or default is argparse.SUPPRESS or (isinstance(default, list) and not default
                                                         and action.nargs in ("*", "?")):
        return "—"
    return f"`{default}`"


def hydra_section(script: str) -> list[str]:
    """A Hydra app: how it is called, its groups (each with its page) and Hydra's own flags."""
    from hydra._internal.utils import get_args_parser

    train = yaml.safe_load((CONF / "train.yaml").read_text())
    helptext = train.get("hydra", {}).get("help", {})
    defaults = default_options()
    lines = [
        f"`{script}` is a [Hydra](https://hydra.cc/docs/intro/) app: its arguments are config choices and "
        "overrides, not flags. Every key of the [primary config](../config/train.md) and of the chosen option "
        "of each group can be set on the command line.", "",
        "```text",
        f"{script} [GROUP=OPTION ...] [KEY=VALUE ...] [+KEY=VALUE ...] [~KEY] [HYDRA FLAGS]",
        f"{script} -m GROUP=A,B KEY=1,2,3      # multirun: one run per combination",
        "```", "",
    ]
    if helptext.get("header"):
        lines += ["What `--help` says first:", "", "```text", helptext["header"].strip(), "```", ""]
    lines += ["## Config groups", "", "| group | options | default | reference |", "| --- | --- | --- | --- |"]
    for group in config_groups():
        if group.name in ("train",) or group.name.startswith("hydra/"):
            continue
        options = ", ".join(f"`{o.name}`" for o in group.options)
        default = f"`{defaults[group.name]}`" if defaults.get(group.name) else "—"
        lines.append(f"| `{group.name}` | {options} | {default} | [{group.title}](../config/{group.slug}.md) |")
    lines += ["", "Hydra's own groups used here: " + ", ".join(
        f"[`{g.name}`](../config/{g.slug}.md)" for g in config_groups() if g.name.startswith("hydra/")) + ".", ""]
    if helptext.get("footer"):
        lines += ["## Examples", "", "```text", helptext["footer"].strip(), "```", ""]
    parser = get_args_parser()
    parser.prog = script
    lines += ["## Hydra's flags", "",
              f"*From Hydra's own parser (`hydra._internal.utils.get_args_parser`, hydra-core {hydra_version()}).*", ""]
    lines += parser_section(parser, level=3, title=False)
    return lines


def hydra_version() -> str:
    import hydra

    return hydra.__version__


# ------------------------------------------------------------------------------------ config groups -----
@dataclass
class Key:
    path: str
    default: str
    comment: str


@dataclass
class Option:
    name: str
    file: str  # relative to the repository, or '' for a generated option
    about: str = ""
    package: str = ""
    defaults: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)


@dataclass
class Group:
    name: str  # 'data', 'hydra/launcher'; 'train' for the primary config
    title: str
    about: str
    options: list[Option]
    source: str = "`conf/`"

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-")


def config_groups() -> list[Group]:
    """The primary config, the generated model group, then every folder of YAML files under conf/."""
    groups = [Group("train", "train (primary)", "`conf/train.yaml`: the keys outside every group, and the "
                    "order in which the groups are composed.", [read_option(CONF / "train.yaml")]),
              model_group()]
    for folder in sorted({p.parent for p in CONF.rglob("*.yaml")} - {CONF}):
        name = folder.relative_to(CONF).as_posix()
        options = [read_option(p) for p in sorted(folder.glob("*.yaml"))]
        groups.append(Group(name, name, f"`conf/{name}/`: choose one with `{name}=OPTION`.", options))
    return groups


def default_options() -> dict[str, str]:
    """{group: option} from train.yaml's defaults list (`- data: digits`)."""
    chosen = {}
    for entry in yaml.safe_load((CONF / "train.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                chosen[key.removeprefix("override ").removeprefix("optional ")] = value
    return chosen


def model_group() -> Group:
    from phiscale import config
    from phiscale.models.specs import ARCHITECTURES, MODEL_NAMES

    options = []
    for name in MODEL_NAMES:
        values = config.model_config(name)
        keys = [Key(f"model.{k}", f"`{yaml_scalar(v)}`", "") for k, v in values.items()]
        family = ARCHITECTURES[name].family if name in ARCHITECTURES else ""
        options.append(Option(name, "", f"Family `{family}`." if family else "", keys=keys))
    about = (md_text(inspect.getdoc(config).split("\n\n")[0]) + " Knobs left `null` take the family's value; "
             "`efficientnet` takes any φ with α, β, γ and the base multipliers φ scales.")
    return Group("model", "model (generated)", about, options, source="`phiscale.config` and the model table")


def yaml_scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


COMMENT = re.compile(r"^\s*#(.*)$")


def read_option(path: Path) -> Option:
    """An option file's keys (dotted), each with its default as written and its comment: the text after
    it on its line (and comment lines below aligned with that text), else the comment lines just above it."""
    text = path.read_text()
    lines = text.splitlines()
    header_end = 0
    while header_end < len(lines) and COMMENT.match(lines[header_end]):
        header_end += 1
    header = [COMMENT.match(line).group(1) for line in lines[:header_end]]
    package = next((h.split(None, 1)[1] for h in header if h.strip().startswith("@package")), "")
    about = header_markdown([h for h in header if not h.strip().startswith("@package")])
    option = Option(path.stem, path.relative_to(ROOT).as_posix(), about, package)
    root = yaml.compose(text)
    if root is None:
        return option
    continuation: set[int] = set()  # comment lines that continue a trailing comment above
    for key_node, value_node in root.value:
        if key_node.value == "defaults" and isinstance(value_node, yaml.SequenceNode):
            option.defaults = [entry_text(lines, n) for n in value_node.value]
            continue
        walk(lines, key_node, value_node, key_node.value, header_end, continuation, option.keys)
    return option


def header_markdown(header: list[str]) -> str:
    """A file's leading comment as Markdown: its prose as paragraphs, its indented lines (example
    commands, `#   phiscale-train ...`) as a code block, as they read in the file."""
    blocks: list[tuple[bool, list[str]]] = []
    for line in header:
        is_code = line.startswith("   ") and bool(line.strip())
        if blocks and blocks[-1][0] == is_code:
            blocks[-1][1].append(line)
        else:
            blocks.append((is_code, [line]))
    out = []
    for is_code, block in blocks:
        if is_code:
            indent = min(len(b) - len(b.lstrip()) for b in block)
            out.append("```text\n" + "\n".join(b[indent:] for b in block) + "\n```")
        else:
            out.append(md_text(" ".join(b.strip() for b in block)))
    return "\n\n".join(o for o in out if o.strip())


def entry_text(lines: list[str], node) -> str:
    """A defaults-list entry as written (`gpu`, `override /model: mobilenet_v3_small`), its comment cut."""
    line = lines[node.start_mark.line][node.start_mark.column:]
    return re.sub(r"\s+#.*$", "", line).strip()


def walk(lines, key_node, value_node, path, header_end, continuation, out: list[Key]) -> None:
    comment = trailing_comment(lines, key_node, value_node, continuation) or \
        leading_comment(lines, key_node.start_mark.line, header_end, continuation)
    if isinstance(value_node, yaml.MappingNode) and value_node.flow_style is False:
        if comment:
            out.append(Key(path, "", comment))
        for k, v in value_node.value:
            walk(lines, k, v, f"{path}.{k.value}", header_end, continuation, out)
        return
    out.append(Key(path, value_text(lines, value_node), comment))


def value_text(lines, node) -> str:
    start, end = node.start_mark, node.end_mark
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        return f"*text, {len(node.value.splitlines())} lines*"
    if start.line == end.line:
        return f"`{lines[start.line][start.column:end.column].strip()}`"
    value = yaml.safe_load(yaml.serialize(node))
    return f"`{yaml_scalar(value)}`"


def trailing_comment(lines, key_node, value_node, continuation: set[int]) -> str:
    line_no = key_node.start_mark.line
    line = lines[line_no]
    after = key_node.end_mark.column
    if value_node.end_mark.line == line_no:
        after = value_node.end_mark.column
    elif value_node.start_mark.line == line_no and isinstance(value_node, yaml.ScalarNode):
        after = len(line)
    at = line.find("#", after)
    if at < 0:
        return ""
    parts = [line[at + 1:].strip()]
    below = line_no + 1
    while below < len(lines) and COMMENT.match(lines[below]) and lines[below].find("#") == at:
        parts.append(COMMENT.match(lines[below]).group(1).strip())
        continuation.add(below)
        below += 1
    return " ".join(parts)


def leading_comment(lines, line_no: int, header_end: int, continuation: set[int]) -> str:
    above, parts = line_no - 1, []
    while above >= header_end and above not in continuation and COMMENT.match(lines[above]):
        parts.insert(0, COMMENT.match(lines[above]).group(1).strip())
        above -= 1
    return " ".join(parts)


def config_page(group: Group) -> str:
    lines = [f"# {group.title}", "", f"*Generated from {group.source} at build time.* {group.about}", ""]
    default = default_options().get(group.name)
    if default:
        lines += [f"Default: `{group.name}={default}` (`conf/train.yaml`).", ""]
    if len(group.options) > 1:
        lines += ["Options: " + ", ".join(f"[`{o.name}`](#{anchor(o.name)})" for o in group.options) + ".", ""]
    for option in group.options:
        if group.name != "train":
            lines += [f"## {option.name}", ""]
            lines += [f"`{group.name}={option.name}`" + (f", `{option.file}`" if option.file else "") + ".", ""]
        if option.about:
            lines += [option.about, ""]
        if option.package:
            lines += [f"Package `{option.package}`: its keys are set from the top of the config.", ""]
        if option.defaults:
            lines += ["Composes: " + ", ".join(f"`{d}`" for d in option.defaults) + ".", ""]
        if option.keys:
            lines += ["| key | default | comment |", "| --- | --- | --- |"]
            lines += [f"| `{k.path}` | {cell(k.default, escaped=True)} | {cell(md_text(k.comment), escaped=True)} |"
                      for k in option.keys]
            lines.append("")
        else:
            lines += ["No keys of its own.", ""]
    return "\n".join(lines) + "\n"


def anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", name.lower().replace(" ", "-"))


# ------------------------------------------------------------------------------------ text ---------------
def first_line(text: str) -> str:
    return text.split("\n\n")[0].replace("\n", " ")


def md_text(text: str) -> str:
    """Plain text as Markdown: HTML-escaped (`<run id>` is no tag), asterisks kept literal, code spans kept."""
    pieces = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1
                   else html.escape(p, quote=False).replace("*", r"\*").replace("_", r"\_") for p in pieces)


def cell(text: str, escaped: bool = False) -> str:
    """A table cell: one line, its pipes escaped outside code spans (the tables extension skips those)."""
    text = text if escaped or text.startswith("`") else md_text(text)
    pieces = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else p.replace("|", r"\|") for p in pieces)
