"""One strict text loader: binary (NUL) and non-UTF-8 files are refused, with the byte offset,
by every command that takes a text file."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaptk.cli.main import main
from adaptk.data import TextFileError, read_text_file, text_file_splits
from adaptk.data.text import first_bad_byte
from adaptk.loading.model import load_text

ELF = b"\x7fELF\x00\xff\x02\x01" + bytes(range(256))  # /bin/ls-like: a NUL at offset 4
GOOD_LINES = b"def f(x):\n    return x + 1\n" * 8
BAD_UTF8 = GOOD_LINES + b"caf\xe9 au lait\n"  # latin-1 e-acute at offset len(GOOD_LINES) + 3
BAD_OFFSET = len(GOOD_LINES) + 3

clean_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@pytest.fixture
def files(tmp_path):
    elf, latin = tmp_path / "ls.bin", tmp_path / "latin1.txt"
    elf.write_bytes(ELF)
    latin.write_bytes(BAD_UTF8)
    return elf, latin


def test_binary_and_bad_utf8_are_refused_with_offsets(files):
    elf, latin = files
    with pytest.raises(TextFileError, match=r"binary file.*NUL byte at byte offset 4") as err:
        read_text_file(elf)
    assert str(elf) in str(err.value)
    with pytest.raises(TextFileError, match=rf"not UTF-8 text: an invalid UTF-8 sequence \(byte 0xe9.*byte offset {BAD_OFFSET}\b"):
        read_text_file(latin)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(TextFileError, match="does not exist"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(TextFileError, match="is a folder"):
        read_text_file(tmp_path)


@given(clean_text)
def test_clean_utf8_reads_back_exactly(text):
    data = text.encode("utf-8")
    assert first_bad_byte(data) is None


@given(clean_text, st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\x80", b"\xed\xa0\x80"]), clean_text)
def test_offset_is_the_first_bad_byte(before, bad, after):
    prefix = before.encode("utf-8")
    offset, what = first_bad_byte(prefix + bad + after.encode("utf-8"))
    assert offset == len(prefix) and "invalid UTF-8" in what


@given(clean_text, clean_text)
def test_a_nul_byte_makes_the_data_binary(before, after):
    prefix = before.encode("utf-8")
    assert first_bad_byte(prefix + b"\x00" + after.encode("utf-8") + b"\xff") == (len(prefix), "a NUL byte")


def test_library_loaders_refuse(files, tmp_path):
    elf, latin = files
    for path, offset in ((elf, 4), (latin, BAD_OFFSET)):
        with pytest.raises(TextFileError, match=rf"byte offset {offset}\b"):
            load_text(text_file=str(path))  # evaluate / calibrate
        with pytest.raises(TextFileError, match=rf"byte offset {offset}\b"):
            text_file_splits([path], "train")  # train
    good = tmp_path / "good.txt"
    good.write_bytes(GOOD_LINES)
    assert load_text(text_file=str(good))[0] == GOOD_LINES.decode()


@pytest.mark.parametrize("argv", [
    ["evaluate", "--no-progress"],
    ["calibrate", "--target-fraction", "0.75", "--no-progress"],
    ["monitor", "--model", "default"],
    ["inspect", "--fixed", "1"],
    ["train", "--steps", "1"],
])
def test_every_command_refuses_with_the_offset(argv, files, tmp_path, capsys):
    elf, latin = files
    out = tmp_path / "out"
    for path, offset in ((elf, 4), (latin, BAD_OFFSET)):
        extra = ["--out", str(out)] if argv[0] in ("evaluate", "calibrate", "train") else []
        assert main([*argv, *extra, "--text-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"adaptk {argv[0]}: error:" in err and str(path) in err and f"byte offset {offset}" in err
        assert not out.exists()
