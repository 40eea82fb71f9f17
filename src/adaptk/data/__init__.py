"""Text corpora (stdlib source, Project Gutenberg novels, WikiText-2, local files) and BPE tokenizers."""

from adaptk.data.corpus import CORPORA, SPLITS, Corpus, data_root, load_corpus, load_text, text_file_splits
from adaptk.data.errors import CorpusError, DataNotFoundError

__all__ = [
    "CORPORA",
    "SPLITS",
    "Corpus",
    "CorpusError",
    "DataNotFoundError",
    "data_root",
    "load_corpus",
    "load_text",
    "text_file_splits",
]
