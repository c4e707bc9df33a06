"""Docs that cannot drift: every `python main.py ...` and `python eval_online.py ...` line in
README.md and docs/ (fenced blocks, inline code, results.sh's EXTRA flags) parses with the real
argument parsers, every relative link resolves (its #anchor too), the generated tables are what
scripts/results_table.py makes from results/**/results.json, the figures what scripts/figures.py
draws, and docs/usage.md's flag groups name every training flag."""

import argparse
import importlib
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

import collect
import eval_online
import main
from config import TrainConfig
from sweep import cli as sweep_cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = re.compile(r"\bpython3? (main\.py|eval_online\.py)\b")
# Where a command line ends inside a shell line.
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "2>&1", "<", "&"}
# Placeholders: `<run>`, `<S>` or an upper-case metavariable (ID, N, PATH) standing for a value.
WHOLE_PLACEHOLDER = re.compile(r"<[^<>]+>|[A-Z][A-Z_]*")
INNER_PLACEHOLDER = re.compile(r"<([^<>]+)>")


def doc_text(path: Path) -> str:
    return path.read_text()


def fenced_lines(text: str) -> list[str]:
    """Shell lines of fenced code blocks (not python blocks), continuations (`\\`) joined."""
    lines, joined, fence = [], "", None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is None or fence == "python":
            continue
        joined += line
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        lines.append(joined)
        joined = ""
    return lines


def inline_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks; a span may break across lines in Markdown."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def command_lines(text: str) -> list[str]:
    """Every command line naming main.py or eval_online.py, plus `results.sh`'s EXTRA flags (they
    go to `main.py train`)."""
    found = []
    for line in fenced_lines(text) + inline_spans(text):
        found += [line[m.start():] for m in SCRIPT.finditer(line)]
        found += [f"python main.py train {extra}" for extra in re.findall(r'EXTRA="([^"]*)"', line)]
    return found


def argv_of(line: str) -> tuple[str, list[str]]:
    """The script and its arguments, up to a shell operator or comment, placeholders filled."""
    tokens = shlex.split(line.replace("...", " "), comments=True)
    script, args = tokens[1], []
    for token in tokens[2:]:
        if token in SHELL_OPERATORS or token.startswith((">", "2>")):
            break
        token = token.strip("[]")
        if re.fullmatch(r"<[^<>]*flags>", token):      # `<flags>`: any flags, none here
            continue
        if WHOLE_PLACEHOLDER.fullmatch(token):
            token = "1"
        args.append(INNER_PLACEHOLDER.sub(r"\1", token))
    return script, [a for a in args if a]


class ParseError(Exception):
    pass


def parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """parse_args without exiting: an unknown flag or a bad value raises ParseError. The docs
    spell every flag in full: an abbreviation, which argparse would accept, fails too."""
    def fail(message):
        raise ParseError(message)
    parsers = [parser] + [sub for action in parser._actions     # the subcommands' parsers too
                          if isinstance(action, argparse._SubParsersAction)
                          for sub in action.choices.values()]
    for each in parsers:
        each.error, each.allow_abbrev = fail, False
    try:
        return parser.parse_args(args)
    except SystemExit as exit_:                     # --help
        if exit_.code:
            raise ParseError(f"exit {exit_.code}") from None
        return argparse.Namespace(command=None)


def check(line: str) -> None:
    script, args = argv_of(line)
    if "--help" in args or "-h" in args:
        args = [a for a in args if a not in ("--help", "-h")]
    if script == "eval_online.py":
        parse(eval_online.build_parser(), args)
    elif args[:1] == ["collect"]:
        parse(collect.build_parser("main.py collect"), args[1:])
    elif args[:1] == ["sweep"]:
        parse(sweep_cli.build_parser("main.py sweep"), args[1:])
    else:
        namespace = parse(main.build_parser(), args)
        typed = main.typed_settings(namespace)
        if namespace.command == "train" and not (namespace.config or namespace.resume):
            try:
                TrainConfig(**typed)                # the settings' own validation
            except ValueError as err:
                raise ParseError(str(err)) from None


def documented_commands() -> list[tuple[str, str]]:
    return [(path.relative_to(ROOT).as_posix(), line)
            for path in DOCS for line in command_lines(doc_text(path))]


def test_the_docs_hold_the_commands_this_test_checks():
    commands = documented_commands()
    pages = {page for page, _ in commands}
    assert len(commands) > 40 and {"README.md", "docs/usage.md", "docs/results.md"} <= pages
    lines = [line for _, line in commands]
    assert any(line.startswith("python eval_online.py") for line in lines)
    assert any("main.py collect" in line for line in lines)


def test_every_documented_command_line_parses():
    failures = []
    for page, line in documented_commands():
        try:
            check(line)
        except ParseError as err:
            failures.append(f"{page}: {line!r}: {err}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("line", [
    "python main.py train --no-such-flag 1",
    "python main.py train --cql-alpha -1",
    "python eval_online.py --checkpoint x.ckpt --episods 5",
    "python main.py collect --dataset local/pusher/expert-v0 --episode 3",
])
def test_a_wrong_command_line_fails_the_check(line):
    with pytest.raises(ParseError):
        check(line)


def test_continuations_comments_and_placeholders():
    text = ("```bash\npython main.py train --dataset local/pusher/medium-v0 --epochs 100 \\\n"
            "    --batch-size 4096   # a comment\n```\n"
            "Resume with `python main.py train --resume\nruns/<run> --max-updates <N> <flags>`.\n")
    lines = command_lines(text)
    assert argv_of(lines[0]) == ("main.py", ["train", "--dataset", "local/pusher/medium-v0",
                                             "--epochs", "100", "--batch-size", "4096"])
    assert argv_of(lines[1]) == ("main.py", ["train", "--resume", "runs/run", "--max-updates",
                                             "1"])


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces
    as hyphens."""
    text = re.sub(r"^```.*?^```", "", doc_text(path), flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_relative_link_resolves():
    """Every relative link names a file that exists, and its #anchor a heading there."""
    broken, count = [], 0
    for path in DOCS:
        for target in LINK.findall(doc_text(path)):
            if re.match(r"[a-z]+:", target):
                continue
            count += 1
            name, _, anchor = target.partition("#")
            linked = (path.parent / name) if name else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert count > 10 and not broken, broken


def script(name: str):
    """A module of scripts/ (results_table, figures), imported as running the script finds it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_generated_tables_are_current():
    stale = [str(path.relative_to(ROOT)) for path in DOCS
             if script("results_table").fill_blocks(doc_text(path), ROOT) != doc_text(path)]
    assert not stale, f"rerun `python scripts/results_table.py --docs`: {stale}"
    blocks = sum(doc_text(path).count("<!-- generated:") for path in DOCS)
    assert blocks >= 5


def test_a_hand_edited_table_is_redrawn_from_its_files():
    readme = doc_text(ROOT / "README.md")
    row = next(line for line in readme.splitlines() if line.startswith("| ogbench/cube"))
    cells = row.split("|")
    cells[3] = " 0.5% "                                   # MeanFlow-QL's figure, hand-edited
    edited = readme.replace(row, "|".join(cells))
    assert edited != readme and script("results_table").fill_blocks(edited, ROOT) == readme


def test_every_curve_file_has_its_figure_as_drawn(tmp_path):
    figures = script("figures")
    curves = figures.curve_files(ROOT)
    assert curves
    for path in curves:
        figure = ROOT / "docs" / "figures" / f"{path.parent.name}.png"
        redrawn = tmp_path / figure.name
        figures.draw(json.loads(path.read_text()), redrawn)
        assert figure.is_file(), f"python scripts/figures.py draws {figure}"
        assert figure.read_bytes() == redrawn.read_bytes(), "rerun python scripts/figures.py"


def test_a_curves_legend_counts_the_seeds_behind_each_point():
    figures = script("figures")
    # Seed 1 stopped after 20k: the line averages two seeds there and one after.
    stopped = {"0": {"20000": 0.5, "30000": 0.7}, "1": {"20000": 0.6}}
    assert figures.seed_count(stopped) == "1-2 seeds per point"
    assert figures.seed_count({"0": {"20000": 0.5}, "1": {"20000": 0.6}}) == "2 seeds"
    assert figures.seed_count({"0": {"20000": 0.5}}) == "1 seed"


def test_usage_lists_every_training_flag():
    """docs/usage.md's flag groups name every TrainConfig flag, and nothing else."""
    import dataclasses
    usage = doc_text(ROOT / "docs" / "usage.md")
    table = usage[usage.index("| group | flags |"):usage.index("**Budget.**")]
    listed = set(re.findall(r"`(--[a-z0-9-]+)`", table))
    flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    assert flags - listed == set(), f"add to docs/usage.md's flag groups: {flags - listed}"
    assert listed - flags <= {"--epochs"}, f"not TrainConfig flags: {listed - flags - {'--epochs'}}"
