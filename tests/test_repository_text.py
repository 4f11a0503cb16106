"""What the repository's text promises: no tracker numbers in code or docs (they mean nothing to a reader of a
clone), and every benchmark result the docs cite exists and is what its command writes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_FOLDERS = ("colbert_az_pylate", "tests", "examples", "benchmarks", "docs")
ISSUE_NUMBER = re.compile(r"\bissues?\s*#?\d+|(?<![\w&])#\d{1,4}\b", re.IGNORECASE)
RESULT_FILE = re.compile(r"benchmarks/results/[\w.-]+\.json")


def _text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in TEXT_FOLDERS:
        files += [path for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".md", ".toml", ".txt")]
    return [path for path in files if "results" not in path.parts]


def test_no_file_names_a_tracker_issue():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ISSUE_NUMBER.search(line) and path.name != "test_repository_text.py"
    ]
    assert found == []


def test_the_pattern_finds_issue_numbers_and_leaves_other_hashes_alone():
    said = ["see issue 16", "(issue #10, item 2)", "fixes #18", "Issues 3"]
    unsaid = ["color: #fff", "&#39;", "row #", "tissue 16s", "the 16 issues"]
    assert all(ISSUE_NUMBER.search(line) for line in said)
    assert not any(ISSUE_NUMBER.search(line) for line in unsaid)


def test_every_cited_result_file_exists_and_the_table_names_the_command_that_writes_each():
    cited = {name for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
             for name in RESULT_FILE.findall(path.read_text(encoding="utf-8"))}  # fmt: skip
    assert len(cited) >= 10
    assert sorted(name for name in cited if not (ROOT / name).is_file()) == []
    table = {}  # docs/benchmarks.md's table of stored results: file -> command
    for line in (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            table.update(dict.fromkeys(re.findall(r"`([\w.-]+\.json)`", cells[0]), cells[1]))
    stored = sorted(path.name for path in (ROOT / "benchmarks" / "results").glob("*.json"))
    assert sorted(table) == stored  # each stored result has its row, and each row its file
    for name, command in table.items():
        scripts = re.findall(r"\b((?:benchmarks|examples)/[\w-]+\.py)", command)
        assert scripts or "colbert-az " in command, f"{name}: the table names no command"
        assert all((ROOT / script).is_file() for script in scripts), f"{name}: {scripts}"
