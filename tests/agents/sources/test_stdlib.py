"""The stdlib kind: the same files, split and bytes as agents.corpus always gave."""

import pytest

from agents.sources import WorkloadError, package_files, stdlib_dir, stdlib_documents


def test_package_files_are_sorted_py_files_of_the_package_without_tests():
    files = package_files("json")
    assert files == sorted(files) and files
    assert all(f.suffix == ".py" and f.stat().st_size >= 2048 for f in files)
    assert all(f.is_relative_to(stdlib_dir() / "json") for f in files)
    assert all("test" not in f.relative_to(stdlib_dir()).parts[1:-1] for f in package_files("email"))
    assert package_files("textwrap") == [stdlib_dir() / "textwrap.py"]  # a module, not a package


def test_split_rule_over_the_concatenated_packages():
    files = package_files("json") + package_files("email")
    docs = stdlib_documents(["json", "email"], held_out_every=3)
    assert [d.source for d in docs.held_out] == [str(f) for f in files[2::3]]
    assert [d.source for d in docs.train] == [str(f) for i, f in enumerate(files) if i % 3 != 2]


def test_texts_are_the_files_bytes_decoded():
    docs = stdlib_documents(["json"])
    for doc in [*docs.train, *docs.held_out]:
        with open(doc.source, "rb") as f:
            assert doc.text.encode("utf-8") == f.read()


def test_missing_package_and_too_few_files_are_workload_errors():
    with pytest.raises(WorkloadError, match="stdlib package 'no_such_pkg' not found"):
        stdlib_documents(["no_such_pkg"])
    with pytest.raises(WorkloadError, match="fewer than 2 usable files"):
        stdlib_documents(["textwrap"])
    with pytest.raises(ValueError, match="held_out_every must be >= 2"):
        stdlib_documents(["json"], held_out_every=1)
