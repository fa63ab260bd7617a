"""Documents, the held-out rule, lazy sequences, decoding and the checks of names and texts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.sources.document import (
    Document,
    FileDocuments,
    LazyDocuments,
    WorkloadError,
    check_name,
    check_split,
    check_text,
    decode,
    split_every,
)


def test_split_every_holds_out_every_nth_in_order():
    train, held = split_every(list("abcdefghijk"), 5)
    assert held == ["e", "j"]
    assert train == list("abcdfghik")
    assert split_every(["a"], 2) == (["a"], [])
    with pytest.raises(ValueError, match="held_out_every must be >= 2"):
        split_every([1, 2], 1)


@given(st.integers(0, 200), st.integers(2, 50))
def test_split_every_is_disjoint_covering_and_ordered(n, every):
    items = list(range(n))
    train, held = split_every(items, every)
    assert sorted(train + held) == items
    assert not set(train) & set(held)
    assert train == sorted(train) and held == sorted(held)
    assert len(held) == n // every
    assert all((i + 1) % every == 0 for i in held)


class _Squares(LazyDocuments):
    def __len__(self):
        return 4

    def _load(self, index):
        return Document(str(index * index), f"sq[{index}]")


def test_lazy_documents_index_slice_iterate():
    docs = _Squares()
    assert docs[1].text == "1" and docs[-1].text == "9"
    assert [d.text for d in docs] == ["0", "1", "4", "9"]
    assert [d.source for d in docs[1:3]] == ["sq[1]", "sq[2]"]
    with pytest.raises(IndexError, match="out of range"):
        docs[4]
    assert "4 documents" in repr(docs)


def test_file_documents_keep_crlf_and_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\n")
    (doc,) = FileDocuments([path])
    assert doc.text == "\ufeffone\r\ntwo\n" and doc.source == str(path)
    assert doc.text.encode("utf-8") == path.read_bytes()


def test_decode_names_where_and_byte_offset():
    with pytest.raises(WorkloadError, match=r"x\.txt: not UTF-8 text \(byte 3"):
        decode(b"abc\xff", "x.txt")


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "a\\b", " pad", "tab\there", "x" * 129])
def test_check_name_refuses_names_unsafe_as_paths(bad):
    with pytest.raises(WorkloadError, match="f.jsonl:3: field 'agent'"):
        check_name(bad, "f.jsonl:3", "agent")


def test_check_name_accepts_strings_and_integers_not_bools():
    assert check_name("alice@example.com", "w", "agent") == "alice@example.com"
    assert check_name(42, "w", "agent") == "42"
    with pytest.raises(WorkloadError, match="must be a string"):
        check_name(True, "w", "agent")
    with pytest.raises(WorkloadError, match="must be a string"):
        check_name(["a"], "w", "agent")


@pytest.mark.parametrize(("value", "message"), [(None, "is missing or null"), (3, "must be a string, got int"),
                                                ("  \n", "is empty")])
def test_check_text_names_where_and_field(value, message):
    with pytest.raises(WorkloadError, match=f"d.jsonl:7: field 'body' {message}"):
        check_text(value, "d.jsonl:7", "body")


def test_check_split_reports_the_empty_part():
    assert check_split("a", [1], [2], 5, "files") is None
    assert "held-out part is empty" in check_split("a", [1, 2], [], 5, "files")
    assert "train part is empty" in check_split("a", [], [1], 5, "files")
