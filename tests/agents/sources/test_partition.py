"""Partitioners: disjoint, covering, deterministic given the seed; Dirichlet skew follows alpha."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.sources.partition import dirichlet_partition, iid_partition, key_partition


def _covers(parts, n):
    rows = [r for part in parts for r in part]
    return sorted(rows) == list(range(n)) and all(part == sorted(part) for part in parts)


def test_key_partition_groups_rows_in_order_of_first_appearance():
    assert key_partition(["b", "a", "b", 3, "a"]) == {"b": [0, 2], "a": [1, 4], 3: [3]}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 300), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_iid_is_disjoint_covering_balanced_and_seeded(n, parts, seed):
    cut = iid_partition(n, parts, seed)
    assert len(cut) == parts and _covers(cut, n)
    assert max(map(len, cut)) - min(map(len, cut)) <= 1
    assert cut == iid_partition(n, parts, seed)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=300), st.integers(1, 8),
       st.floats(0.05, 100), st.integers(0, 2**32 - 1))
def test_dirichlet_is_disjoint_covering_and_seeded(labels, parts, alpha, seed):
    cut = dirichlet_partition(labels, parts, alpha, seed)
    assert len(cut) == parts and _covers(cut, len(labels))
    assert cut == dirichlet_partition(labels, parts, alpha, seed)


def test_seeds_change_the_partition():
    assert iid_partition(100, 4, 0) != iid_partition(100, 4, 1)
    labels = [i % 10 for i in range(1000)]
    assert dirichlet_partition(labels, 4, 0.5, 0) != dirichlet_partition(labels, 4, 0.5, 1)


def test_small_alpha_concentrates_labels_large_alpha_spreads_them():
    labels = [i % 10 for i in range(5000)]

    def labels_per_part(alpha):  # mean count of labels holding >= 10% of a part's rows
        cut = dirichlet_partition(labels, 5, alpha, 0)
        return sum(sum(1 for lab in range(10) if sum(labels[r] == lab for r in p) >= 0.1 * len(p))
                   for p in cut) / 5

    assert labels_per_part(0.05) < 3 < labels_per_part(100.0)


def test_dirichlet_redraws_until_each_part_is_big_enough():
    labels = [i % 10 for i in range(200)]
    assert min(map(len, dirichlet_partition(labels, 6, 0.5, 0, min_size=15, tries=1))) < 15  # the first draw
    assert min(map(len, dirichlet_partition(labels, 6, 0.5, 0, min_size=15))) >= 15


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_parts must be >= 1"):
        iid_partition(5, 0, 0)
    with pytest.raises(ValueError, match="alpha > 0"):
        dirichlet_partition([0, 1], 2, 0.0, 0)
