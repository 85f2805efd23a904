"""What README.md and docs/ promise about commands, options, files and names, checked
against the code: a renamed option, a dropped choice or a missing page fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _option(p: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in p._actions if flag in a.option_strings), None)


def _readme_command_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [ln.split("  #", 1)[0].strip() for ln in block.splitlines() if ln.strip().startswith("hmrflow ")]


def _doc_command_lines() -> list[tuple[str, str]]:
    """(page, line) of every ``hmrflow ...`` line in a fenced block of docs/*.md."""
    out = []
    for md in sorted((ROOT / "docs").rglob("*.md")):
        parts = md.read_text(encoding="utf-8").split("```")
        for block in parts[1::2]:
            for ln in block.splitlines():
                ln = ln.split("  #", 1)[0].strip()
                if ln.startswith("hmrflow ") and not ln.endswith("\\"):
                    out.append((md.name, ln))
    return out


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    from hmrflow.jobs.cli import build_parser

    return build_parser()


def test_readme_lists_every_command(parser) -> None:
    listed = {ln.split()[1] for ln in _readme_command_lines()}
    assert set(_subparsers(parser)) <= listed | {"-h"}, set(_subparsers(parser)) - listed


@pytest.mark.parametrize("line", _readme_command_lines())
def test_readme_command_line_matches_the_cli(parser, line: str) -> None:
    """Subcommands, options and listed choices of every README command line exist."""
    tokens = [t.strip("[]") for t in line.split()[1:]]
    p = _subparsers(parser)[tokens[0]]
    expect_sub = bool(_subparsers(p))
    last: argparse.Action | None = None
    for tok in tokens[1:]:
        if tok in ("|", "...", ""):
            expect_sub = bool(_subparsers(_subparsers(parser)[tokens[0]])) and tok == "|"
            if tok == "|":
                p = _subparsers(parser)[tokens[0]]
            continue
        if tok.startswith("-"):
            for flag in tok.split("|"):
                act = _option(p, flag)
                assert act is not None, f"{line}: {flag} is not an option of hmrflow {tokens[0]}"
                last = act
            expect_sub = False
            continue
        if expect_sub and not tok.isupper():
            subs = _subparsers(p)
            for alt in tok.split("|"):
                assert alt in subs, f"{line}: {alt} is not a subcommand ({sorted(subs)})"
            p = subs[tok.split("|")[0]]
            expect_sub = bool(_subparsers(p))
            continue
        if last is not None and last.choices is not None and "|" in tok:
            for alt in tok.split("|"):
                if not alt.isupper() and not alt.endswith(".yaml"):
                    assert alt in last.choices, f"{line}: {alt} is not a choice of {last.option_strings}"
        last = None


@pytest.mark.parametrize("page,line", _doc_command_lines())
def test_docs_command_line_matches_the_cli(parser, page: str, line: str) -> None:
    test_readme_command_line_matches_the_cli(parser, line)


def test_readme_bench_targets_and_export_formats_exist() -> None:
    from hmrflow.jobs.cli.bench import TARGETS
    from hmrflow.jobs.export import FORMATS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    bench = re.search(r"hmrflow bench NAME\s+# (.*)", text)
    assert bench is not None
    assert {t.strip() for t in bench.group(1).split(",")} == set(TARGETS)
    fmt = re.search(r"hmrflow export OUT --format (\S+)", text)
    assert fmt is not None and set(fmt.group(1).split("|")) == set(FORMATS)


def test_every_linked_page_exists() -> None:
    for md in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+\.(?:md|json))(?:#[^)]*)?\)", md.read_text(encoding="utf-8")):
            if target.startswith("http"):
                continue
            assert (md.parent / target).resolve().exists(), f"{md.relative_to(ROOT)} links to missing {target}"


def test_opensim_doc_tables_match_the_model_and_marker_set() -> None:
    """docs/opensim.md names every coordinate and marker of the code, and no other."""
    from hmrflow.jobs.export.opensim.markers import MARKER_NAMES
    from hmrflow.jobs.export.opensim.model import COORDINATES

    text = (ROOT / "docs" / "opensim.md").read_text(encoding="utf-8")
    model = text.split("## The model", 1)[1].split("##", 1)[0]
    named: set[str] = set()
    for row in model.splitlines():
        if row.startswith("| `"):
            cells = row.split("|")
            for name in re.findall(r"`([a-z_]+(?:/[a-z]+)*)`", cells[3]):
                base = name.split("/")[0]
                if base == "pelvis_tx":
                    named |= {"pelvis_tx", "pelvis_ty", "pelvis_tz"}
                elif base.startswith("pelvis") or base.startswith("lumbar"):
                    named.add(base)
                else:
                    named |= {f"{base}_r", f"{base}_l"}
    assert named == set(COORDINATES), named ^ set(COORDINATES)
    markers = text.split("## The marker set", 1)[1].split("##", 1)[0]
    listed: set[str] = set()
    for row in markers.splitlines():
        if row.startswith("| `"):
            for name in re.findall(r"`([A-Z0-9]+)`", row.split("|")[1]):
                listed |= {name} if name in ("C7", "T10", "CLAV", "STRN") else {"L" + name, "R" + name}
    assert listed == set(MARKER_NAMES), listed ^ set(MARKER_NAMES)
