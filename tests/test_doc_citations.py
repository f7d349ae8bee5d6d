"""Citations of the project's documents resolve: every `docs/<name>.md §N` (or `section N`, or a
bare `docs/<name>.md`) in a tracked .py or .md file names a document that exists and, when a
section is given, a heading numbered N in it (`## 3. Consensus`, `### 4.1 Safety rules`); every
relative markdown link to a .md file leads to a file. Also: no citation of the contracts that
used to live outside the repository remains (expected to fail until they are all rewritten).
Problems are reported as `file:line: what`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = frozenset({".git", ".venv", "build", "dist", "node_modules", "__pycache__"})

# `docs/design.md §3`, `docs/design.md §4.1`, `docs/design.md section 3`, `docs/design.md`, and
# lists after the first section: `docs/design.md §3, §4 and §8`.
_SECTION = r"(?:§\s*|section\s+)(\d+(?:\.\d+)*)"
CITATION = re.compile(
    r"(?<![\w/.-])docs/([a-z0-9][a-z0-9_.-]*\.md)"
    rf"(?:\s+{_SECTION}((?:(?:\s*,\s*|\s+and\s+)§\s*\d+(?:\.\d+)*)*))?"
)
MORE_SECTIONS = re.compile(r"§\s*(\d+(?:\.\d+)*)")
# A markdown link to a local .md file: `](design.md)`, `](../README.md#figures)`.
LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s#]+\.md)(?:#[^)\s]*)?\)")
# `## 3. Consensus`, `### 4.1 Safety rules`: the number is what a citation names.
HEADING = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s+\S")
FENCE = re.compile(r"^\s*(```|~~~)")
# The contracts' old homes, outside the repository (assembled so this file does not cite them).
_OLD_NAMES = "|".join(("DES" + "IGN", "DOM" + "AIN", "STY" + "LE"))
OLD_CITATION = re.compile(
    rf"\b(?:{_OLD_NAMES})\.md|\.\./shared/|\b(?:{_OLD_NAMES})\s+(?:§|section\b|practice\b)"
)


@dataclass(frozen=True, slots=True)
class Citation:
    line: int
    doc: str  # path relative to the repository root, e.g. "docs/design.md"
    section: str | None  # "3", "4.1", or None for the whole document


def repo_files(root: Path = ROOT) -> list[Path]:
    """Tracked (and new, not ignored) .py and .md files; generated protobuf code excluded."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names: Iterable[str] = (name for name in listed.split("\0") if name)
    except (OSError, subprocess.CalledProcessError):
        names = (
            str(path.relative_to(root))
            for path in root.rglob("*")
            if not SKIPPED_DIRS.intersection(path.relative_to(root).parts)
        )
    return sorted(
        root / name
        for name in set(names)
        if name.endswith((".py", ".md"))
        and "_pb2" not in Path(name).name
        and (root / name).is_file()
    )


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def citations_in(text: str) -> Iterator[Citation]:
    for match in CITATION.finditer(text):
        line = _line_of(text, match.start())
        doc = "docs/" + match.group(1)
        first, more = match.group(2), match.group(3)
        if first is None:
            yield Citation(line, doc, None)
            continue
        yield Citation(line, doc, first)
        for extra in MORE_SECTIONS.finditer(more or ""):
            yield Citation(line, doc, extra.group(1))


def headings_of(text: str) -> set[str]:
    """The section numbers of a markdown document (headings inside code fences do not count)."""
    numbers: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            numbers.add(match.group(1))
    return numbers


def citation_problems(root: Path, files: Iterable[Path]) -> list[str]:
    """`file:line: problem` for each citation or local markdown link that does not resolve."""
    problems: list[str] = []
    headings: dict[Path, set[str] | None] = {}

    def sections(doc: Path) -> set[str] | None:
        if doc not in headings:
            headings[doc] = headings_of(doc.read_text(encoding="utf-8")) if doc.is_file() else None
        return headings[doc]

    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(root)
        for citation in citations_in(text):
            found = sections(root / citation.doc)
            if found is None:
                problems.append(f"{where}:{citation.line}: {citation.doc} does not exist")
            elif citation.section is not None and citation.section not in found:
                problems.append(
                    f"{where}:{citation.line}: {citation.doc} has no section §{citation.section}"
                )
        if path.suffix == ".md":
            for match in LINK.finditer(text):
                target = (path.parent / match.group(1)).resolve()
                if not target.is_file():
                    line = _line_of(text, match.start())
                    problems.append(f"{where}:{line}: link to {match.group(1)} leads nowhere")
    return problems


def old_citations(root: Path, files: Iterable[Path]) -> list[str]:
    """`file:line: text` for each citation of the contracts' old, out-of-repository homes."""
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in OLD_CITATION.finditer(text):
            line = _line_of(text, match.start())
            found.append(f"{path.relative_to(root)}:{line}: {match.group(0)}")
    return found


def test_every_doc_citation_resolves() -> None:
    problems = citation_problems(ROOT, repo_files())
    assert problems == [], "\n".join(problems)


def test_the_contract_documents_exist_with_numbered_sections() -> None:
    for name in ("design", "domain", "style"):
        doc = ROOT / "docs" / f"{name}.md"
        assert doc.is_file(), f"{doc} is missing"
        assert {"1", "2", "3"} <= headings_of(doc.read_text(encoding="utf-8")), doc


def test_no_citation_of_the_old_out_of_repo_contracts() -> None:
    this_file = Path(__file__).resolve()
    found = old_citations(ROOT, [p for p in repo_files() if p.resolve() != this_file])
    assert found == [], "\n".join(found)


def test_the_parser_reports_a_missing_section_and_a_missing_document(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(
        "# Guide\n\n## 1. Start\n\n### 1.2 Detail\n\n```\n## 7. In a code block\n```\n"
        "See [the other](other.md) and [a page](guide.md#start).\n"
    )
    cited = "docs/" + "guide.md"  # assembled, so the repository scan does not see these
    source = tmp_path / "module.py"
    source.write_text(
        f'"""Rules of {cited} §1 and {cited} section 1.2.\n'
        f"Also {cited} §1, §9 and §1.2;\n"
        f"and {cited} §7, docs/{'absent'}.md §1 and {cited}.\n"
        '"""\n'
    )
    assert [c.section for c in citations_in(source.read_text())] == [
        "1", "1.2", "1", "9", "1.2", "7", "1", None,
    ]  # fmt: skip
    assert headings_of((docs / "guide.md").read_text()) == {"1", "1.2"}
    assert citation_problems(tmp_path, [source, docs / "guide.md"]) == [
        f"module.py:2: {cited} has no section §9",
        f"module.py:3: {cited} has no section §7",
        f"module.py:3: docs/{'absent'}.md does not exist",
        f"{cited}:10: link to other.md leads nowhere",
    ]


def test_old_citations_are_found(tmp_path: Path) -> None:
    old, shared, new = "DES" + "IGN", "../" + "shared/", "docs/" + "x.md"
    source = tmp_path / "module.py"
    source.write_text(f"# see {old}.md section 3\n# and {shared}x\n# and {old} §4\n# {new}\n")
    assert old_citations(tmp_path, [source]) == [
        f"module.py:1: {old}.md",
        f"module.py:2: {shared}",
        f"module.py:3: {old} §",
    ]


def test_docs_name_every_store_key_and_every_metric() -> None:
    """What operators read in docs/ledger.md and docs/node.md matches the code: every key
    family and fixed key of the store, every metric the node exports."""
    from kledger.node.storage import keyspace, merkle_log, state_tree, store
    from kledger.node.telemetry.metrics import NodeMetrics
    from kledger.node.telemetry.timeline import BlockTimeline

    ledger_doc = (ROOT / "docs" / "ledger.md").read_text(encoding="utf-8")
    keys = [
        value
        for module in (keyspace, store, merkle_log, state_tree)
        for name, value in vars(module).items()
        if name.isupper()
        and isinstance(value, bytes)
        and value[1:2] == b"/"
        and not name.endswith("_END")  # a scan bound, never stored
    ]
    assert len(keys) > 15
    assert sorted({k.decode() for k in keys if k.decode() not in ledger_doc}) == []
    node_doc = (ROOT / "docs" / "node.md").read_text(encoding="utf-8")
    registry = NodeMetrics.create("KOMCA").registry
    BlockTimeline("KOMCA", registry)  # the node adds its phase histograms to the same registry
    exported = {metric.name for metric in registry.collect()}
    documented = set(re.findall(r"`(kledger_[a-z_]+?)(?:_total)?[`{]", node_doc))
    assert exported - documented == set(), "exported but not in docs/node.md"
    assert documented - exported == set(), "in docs/node.md but not exported"
