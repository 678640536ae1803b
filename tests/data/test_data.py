"""The packaged corpora: markup stripping, deterministic disjoint splits."""

from __future__ import annotations

import pytest

from lenssample.data.corpora import (
    BOOKS,
    books,
    corpus,
    mixed,
    paragraphs_of,
    read_text_file,
    strip_wiki_markup,
    wikipedia,
)
from lenssample.data.sets import documents


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
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))  # not UTF-8: named, with the fix
    with pytest.raises(ValueError, match=r"latin1.txt' is not UTF-8 text \(byte 3 is b'\\xe9'\); give a plain-text"):
        read_text_file(tmp_path / "latin1.txt")


def test_paragraphs_of_unwraps_hard_wrapped_text():
    text = (
        "\r\nTHE SISTERS\r\n\r\nThere was no hope\r\nfor him  this time.\r\n \r\nOld Cotter was\nsitting.\n"
    )
    assert paragraphs_of(text) == [
        "THE SISTERS",
        "There was no hope for him this time.",
        "Old Cotter was sitting.",
    ]


def test_books_are_public_domain_prose_split_by_passage():
    train, heldout, everything = books("train"), books("heldout"), books("all")
    assert len(train) + len(heldout) == len(everything) > 500
    assert sum(len(d.text) for d in everything) > 5_000_000
    assert not {d.title for d in train} & {d.title for d in heldout}
    assert not {d.text for d in train} & {d.text for d in heldout}
    assert [d.title for d in books("heldout")] == [d.title for d in heldout]  # deterministic
    # every allowed book contributes to both splits, and nothing outside the allow-list is read
    for _file, title, _author, year in BOOKS:
        assert year < 1929
        assert any(d.title.startswith(title) for d in train) and any(
            d.title.startswith(title) for d in heldout
        )
    assert not any("Pulp Fiction" in d.title or "Kafka" in d.title for d in everything)
    first = everything[0].text
    assert "\r" not in first and "\n\n" in first and "  " not in first
    assert first.split("\n\n")[1].count(" ") > 20  # unwrapped paragraphs, not 72-column lines


def test_corpus_by_name():
    assert [d.title for d in corpus("books", "heldout")] == [d.title for d in books("heldout")]
    assert (
        len(corpus("mixed", "train")) == len(books("train")) + len(wikipedia("train")) == len(mixed("train"))
    )
    with pytest.raises(ValueError, match="corpus 'gutenberg' is not one of books, wikipedia, mixed"):
        corpus("gutenberg")
    with pytest.raises(ValueError, match="split='dev'"):
        books("dev")
    assert [d.title for d in documents("books:heldout")] == [d.title for d in books("heldout")]
