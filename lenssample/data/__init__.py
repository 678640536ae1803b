"""Text and evaluation data, installed from packages by the project's own set-up (never fetched at run time).

:mod:`~lenssample.data.corpora`: public-domain books and Wikipedia articles with train/held-out splits;
:mod:`~lenssample.data.sets`: question sets and sources of the evaluation harness; :mod:`~lenssample.data.windows`:
texts cut into token windows.
"""

from lenssample.data.corpora import CORPORA, SPLITS, Document, books, corpus, mixed, read_text_file, wikipedia
from lenssample.data.windows import token_windows

__all__ = [
    "CORPORA",
    "SPLITS",
    "Document",
    "books",
    "corpus",
    "mixed",
    "read_text_file",
    "token_windows",
    "wikipedia",
]
