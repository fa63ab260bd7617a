"""The files kind: folders and globs per agent, the text-file rule, the split and its errors."""

import pytest

from agents.config import WorkloadConfig
from agents.sources import WorkloadError, check_workload, documents_for, topology_of
from agents.sources.files import agent_files
from agents.topology import AgentSpec


def _tree(root, n=5, prefix="doc"):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{prefix}{i}.md").write_bytes(f"# {prefix} {i}\r\nline\n".encode())
    return root


def _cfg(files, **kw):
    return WorkloadConfig(kind="files", files={k: [str(v) for v in vs] for k, vs in files.items()}, **kw)


def test_directory_walk_skips_hidden_empty_and_binary_files(tmp_path):
    root = _tree(tmp_path / "notes", n=3)
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_text("deep")
    (root / ".secret").write_text("hidden")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("hidden dir")
    (root / "empty.txt").write_bytes(b"")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    found = agent_files("a", [str(root)])
    assert [p.relative_to(root).as_posix() for p in found] == ["doc0.md", "doc1.md", "doc2.md", "sub/deep.txt"]


def test_globs_and_named_files_are_deduplicated_and_sorted(tmp_path):
    root = _tree(tmp_path / "w", n=4)
    found = agent_files("a", [str(root / "doc3.md"), str(root / "*.md"), str(tmp_path / "**" / "doc0.md")])
    assert [p.name for p in found] == ["doc0.md", "doc1.md", "doc2.md", "doc3.md"]


def test_documents_split_every_nth_file_and_keep_bytes(tmp_path):
    root = _tree(tmp_path / "n", n=7)
    cfg = _cfg({"notes": [root]}, held_out_every=3)
    docs = documents_for(cfg, AgentSpec("notes", "team", "files"))
    names = [f"doc{i}.md" for i in range(7)]
    assert [d.source.rsplit("/", 1)[1] for d in docs.train] == [n for i, n in enumerate(names) if i % 3 != 2]
    assert [d.source.rsplit("/", 1)[1] for d in docs.held_out] == ["doc2.md", "doc5.md"]
    assert docs.train[0].text == "# doc 0\r\nline\n"  # bytes decoded, \r\n kept


def test_topology_default_and_given(tmp_path):
    cfg = _cfg({"b": [_tree(tmp_path / "b")], "a": [_tree(tmp_path / "a")]})
    assert topology_of(cfg) == {"files": {"team": ["b", "a"]}}
    check_workload(cfg)
    given = _cfg({"a": [tmp_path / "a"], "b": [tmp_path / "b"]}, topology={"d": {"t": ["a"]}})
    assert topology_of(given) == {"d": {"t": ["a"]}}  # b is not in the topology: ignored
    lacking = _cfg({"a": [tmp_path / "a"]}, topology={"d": {"t": ["a", "zed"]}})
    with pytest.raises(WorkloadError, match="workload.topology names agent 'zed', which workload.files lacks"):
        check_workload(lacking)


@pytest.mark.parametrize(("entry", "message"), [
    ("missing_dir", r"workload.files.a: '.*missing_dir': no such file or directory"),
    ("nomatch/*.md", r"workload.files.a: glob '.*nomatch/\*.md' matches nothing"),
    ("bins/*", r"glob '.*bins/\*' matches 1 paths but no text file"),
    ("bins/x.bin", r"workload.files.a: file '.*x.bin' is binary"),
    ("empty.txt", r"workload.files.a: file '.*empty.txt' is empty"),
    ("hollow", r"directory '.*hollow' holds no text file"),
])
def test_bad_entries_name_the_agent_and_entry(tmp_path, entry, message):
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "x.bin").write_bytes(b"\x00\x01")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "hollow").mkdir()
    with pytest.raises(WorkloadError, match=message):
        check_workload(_cfg({"a": [tmp_path / entry]}))


def test_undecodable_file_names_the_file_and_byte(tmp_path):
    root = _tree(tmp_path / "n")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(WorkloadError, match=r"latin1.txt: not UTF-8 text \(byte 3"):
        check_workload(_cfg({"a": [root]}))


def test_every_agent_with_too_few_files_is_listed(tmp_path):
    cfg = _cfg({"ok": [_tree(tmp_path / "ok", 5)], "few": [_tree(tmp_path / "few", 4)],
                "one": [_tree(tmp_path / "one", 1)]})
    with pytest.raises(WorkloadError, match="2 of 3 agents cannot run") as err:
        check_workload(cfg)
    assert "agent 'few': 4 text files, so its held-out part is empty" in str(err.value)
    assert "agent 'one': 1 text files" in str(err.value)
    with pytest.raises(WorkloadError, match="agent 'few'"):
        documents_for(cfg, AgentSpec("few", "team", "files"))
