import pytest
import torch

from agents.corpus import ByteCorpus, eval_windows, package_files, read_bytes, sample_windows


def test_stdlib_package_files_are_real_sources():
    files = package_files("json")
    assert files and all(f.suffix == ".py" for f in files)
    assert b"def " in files[0].read_bytes()


def test_split_is_deterministic_and_disjoint():
    a = ByteCorpus.from_packages(["json", "email"])
    b = ByteCorpus.from_packages(["json", "email"])
    assert a == b
    assert a.held_out and not set(a.train) & set(a.held_out)


def test_unknown_package_is_rejected():
    with pytest.raises(ValueError, match="'no_such_pkg' not found"):
        package_files("no_such_pkg")


def test_windows_shapes_and_targets():
    data = read_bytes(package_files("json")[0])
    batch = sample_windows(data, 4, 16, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 17) and batch.dtype == torch.int64 and int(batch.max()) < 256
    held = eval_windows(package_files("json")[:2], 16, 6)
    assert held.shape[1] == 17 and 1 <= held.shape[0] <= 6
