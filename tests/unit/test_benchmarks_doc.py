"""docs/benchmarks.md's notes (the prose under its table) and docs/benchmarks-notes.md, which
``make bench`` puts under a new table, are the same text: a section written in one only is lost
the next time the other is written."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_notes_under_the_table_are_benchmarks_notes_md() -> None:
    table = (DOCS / "benchmarks.md").read_text()
    notes = (DOCS / "benchmarks-notes.md").read_text()
    start = table.index("\n\n## ")  # the notes start with a heading, after the table
    assert table[start + 1 :] == notes, "copy the sections of one into the other"
