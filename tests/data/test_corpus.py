import pytest

from adaptk.data import CorpusError, DataNotFoundError, data_root, load_corpus, load_text, text_file_splits
from adaptk.data.corpus import split_lines, stdlib_files, stdlib_split_of


def test_stdlib_split_is_a_deterministic_partition():
    files = stdlib_files()
    assert files == sorted(files) and len(files) > 100
    assert not any("/test/" in f"/{rel}" or "site-packages" in rel for rel, _ in files)
    splits = [stdlib_split_of(rel) for rel, _ in files]
    assert {"train", "valid", "test"} == set(splits)
    assert splits.count("train") > 5 * splits.count("valid")
    assert stdlib_split_of("json/decoder.py") == stdlib_split_of("json/decoder.py")


def test_stdlib_valid_is_deterministic_and_capped():
    a, b = load_corpus("stdlib", "valid"), load_corpus("stdlib", "valid")
    assert a.sha256 == b.sha256 and 0 < len(a.text) <= 400_000
    assert "# file: " in a.text


def test_gutenberg_and_wikitext():
    g = load_text("gutenberg", "valid")
    assert len(g) > 10_000 and "*** START OF" not in g
    w = load_text("wikitext-2", "test")
    assert w.startswith(" \n = ")


def test_wikitext_train_is_refused():
    with pytest.raises(CorpusError, match="never trains on WikiText"):
        load_text("wikitext-2", "train")


def test_unknown_corpus_and_split():
    with pytest.raises(CorpusError, match="stdlib"):
        load_text("nope", "train")
    with pytest.raises(CorpusError, match="valid"):
        load_text("stdlib", "dev")


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTK_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(DataNotFoundError):
        load_text("gutenberg", "valid")
    monkeypatch.setenv("ADAPTK_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="ADAPTK_DATA_DIR"):
        data_root()


def test_text_file_split_by_position(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("".join(f"line {i}\n" for i in range(100)))
    train, valid, test = (text_file_splits([p], s).text for s in ("train", "valid", "test"))
    assert train + valid + test == p.read_text()
    assert valid.splitlines() == [f"line {i}" for i in range(90, 95)]
    assert split_lines(p.read_text(), "test").splitlines()[-1] == "line 99"


def test_text_file_errors(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("  \n")
    with pytest.raises(CorpusError, match="empty"):
        text_file_splits([empty], "train")
    with pytest.raises(CorpusError, match="does not exist"):
        text_file_splits([tmp_path / "nope.txt"], "train")
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"\xff\xfe\x00bad" * 10)
    with pytest.raises(CorpusError, match="UTF-8"):
        text_file_splits([bad], "train")
    with pytest.raises(CorpusError, match="--text-file"):
        text_file_splits([], "train")


def test_tokenizer_roundtrip(tmp_path):
    from transformers import AutoTokenizer

    from adaptk.data.tokenizer import train_bpe

    text = "def f(x):\n    return x + 1\n" * 50
    tok = train_bpe(text, 300)
    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    s = "def g(y):\n    return y\n"
    assert again.decode(again(s)["input_ids"]) == s
    assert again.eos_token == "<|endoftext|>"
