"""Real text, installed from packages by the project's own set-up (never fetched at run time, never written by us).

``wikipedia``: the English Wikipedia articles (April 2016 dump, ~100 full articles after removing redirects, a few
MB of prose) that gensim ships as test data in its wheel (``gensim/test/test_data/enwiki-latest-pages-articles1
.xml-p000000010p000030302-shortened.bz2``). ``make setup`` installs the wheel with ``--no-deps``; we only read the
file, gensim is never imported. Wikipedia text is licensed CC BY-SA 3.0.

Articles are split deterministically into ``train`` and ``heldout`` (every 5th article by title order is held
out), so that a tuned lens or fitted weights are never evaluated on the text they were fitted on.
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lenssample.models import cache_root

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
INSTALL_GENSIM = "pip install --no-deps gensim==4.4.0"
SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class Document:
    """One document of a corpus: ``title`` and plain ``text``."""

    title: str
    text: str


def gensim_test_data(filename: str) -> Path:
    """Path of a file in gensim's test data, without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the Wikipedia corpus comes from the gensim wheel; install it with: {INSTALL_GENSIM}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the gensim wheel; reinstall with: {INSTALL_GENSIM}")
    return path


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
    source = gensim_test_data(WIKI_FILE)
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


def wikipedia(split: str = "all") -> list[Document]:
    """Wikipedia articles as plain text; ``split`` is ``"train"``, ``"heldout"`` (every 5th article) or ``"all"``."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {', '.join(SPLITS)}")
    docs = _wikipedia_all()
    if split == "all":
        return list(docs)
    return [d for i, d in enumerate(docs) if (i % 5 == 4) == (split == "heldout")]


def read_text_file(path: str | Path) -> list[Document]:
    """A user's plain-text file as one document (UTF-8); blank files are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"text file {str(path)!r} is empty; give a file with some text")
    return [Document(title=path.name, text=text)]
