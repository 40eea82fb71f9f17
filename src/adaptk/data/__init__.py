"""Text corpora (stdlib source, Project Gutenberg novels, WikiText-2, local files) and BPE tokenizers."""

from adaptk.data.corpus import CORPORA, SPLITS, Corpus, data_root, load_corpus, load_text, text_file_splits
from adaptk.data.errors import CorpusError, DataNotFoundError, TextFileError
from adaptk.data.sample import SAMPLES, piece_tokens, spread_sample, spread_sample_documents
from adaptk.data.text import read_text_file

__all__ = [
    "CORPORA",
    "SPLITS",
    "Corpus",
    "CorpusError",
    "SAMPLES",
    "DataNotFoundError",
    "TextFileError",
    "data_root",
    "load_corpus",
    "load_text",
    "piece_tokens",
    "read_text_file",
    "spread_sample",
    "spread_sample_documents",
    "text_file_splits",
]
