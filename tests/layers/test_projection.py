import subprocess
import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.projection import projection_digest, read_projection


def test_rows_are_orthonormal():
    p = read_projection(0, "model.layers.0.mlp.up_proj", 24, 64)
    assert p.shape == (24, 64) and p.dtype == torch.float64
    torch.testing.assert_close(p @ p.T, torch.eye(24, dtype=torch.float64), atol=1e-12, rtol=0)


def test_depends_on_seed_and_name():
    a = read_projection(0, "a.q_proj", 8, 32)
    assert torch.equal(a, read_projection(0, "a.q_proj", 8, 32))
    assert not torch.allclose(a, read_projection(1, "a.q_proj", 8, 32))
    assert not torch.allclose(a, read_projection(0, "a.k_proj", 8, 32))


@settings(max_examples=25, deadline=None)
@given(r1=st.integers(1, 20), extra=st.integers(1, 12), d_in=st.integers(32, 48), seed=st.integers(0, 2**31))
def test_prefix_property(r1, extra, d_in, seed):
    """Rows of rank r1 are the first rows of rank r1+extra; `start` returns exactly the tail."""
    small = read_projection(seed, "m", r1, d_in)
    big = read_projection(seed, "m", r1 + extra, d_in)
    assert torch.equal(big[:r1], small)
    assert torch.equal(read_projection(seed, "m", r1 + extra, d_in, start=r1), big[r1:])


def test_bit_identical_in_another_process_with_other_thread_count():
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(3)]
    here = projection_digest({n: read_projection(7, n, 16, 96).float() for n in names})
    code = (
        "import torch; torch.set_num_threads(1);"
        "from layers.projection import projection_digest, read_projection;"
        f"names={names!r};"
        "print(projection_digest({n: read_projection(7, n, 16, 96).float() for n in names}))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == here


def test_rank_above_input_features_is_rejected():
    try:
        read_projection(0, "tiny.proj", 9, 8)
    except ValueError as e:
        assert "tiny.proj" in str(e) and "9" in str(e)
    else:
        raise AssertionError("expected ValueError")
