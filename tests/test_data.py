"""The packaged corpora: markup stripping, deterministic disjoint splits."""

from __future__ import annotations

import pytest

from lenssample.data import read_text_file, strip_wiki_markup, wikipedia


def test_strip_wiki_markup_keeps_prose_only():
    raw = (
        "{{Infobox river|name=Aa {{nested|x}}}}\n'''Aa''' is a [[river|small river]] in [[France]]"
        "<ref>Some book, p. 4</ref> that flows north into the sea near the town.\n\n"
        "== History ==\n{| class=wikitable\n|-\n| a || b\n|}\n[[Category:Rivers]]\n"
        "* The river was named in the [[Middle Ages]] after an old word for water in the region."
    )
    text = strip_wiki_markup(raw)
    assert text.startswith("Aa is a small river in France that flows north")
    for junk in ["{{", "}}", "[[", "<ref", "Category", "'''", "wikitable", "=="]:
        assert junk not in text
    assert "named in the Middle Ages after an old word" in text


def test_wikipedia_splits_are_disjoint_and_deterministic():
    train, heldout, everything = wikipedia("train"), wikipedia("heldout"), wikipedia("all")
    assert len(train) + len(heldout) == len(everything) >= 50
    assert not {d.title for d in train} & {d.title for d in heldout}
    assert [d.title for d in wikipedia("heldout")] == [d.title for d in heldout]
    assert sum(len(d.text) for d in everything) > 1_000_000
    with pytest.raises(ValueError, match="split='test'"):
        wikipedia("test")


def test_read_text_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_text_file(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        read_text_file(tmp_path / "empty.txt")
