"""k-center greedy: identical picks to a straightforward reference, determinism, ties, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.kcenter import k_center_greedy, n_to_keep


def reference_k_center(x: np.ndarray, n_select: int, seed: int) -> list[int]:
    """The rule written the plain way: float64 distances by subtraction, one full pass per pick."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    first = int(np.random.default_rng(seed).integers(n))
    picked = [first]
    is_picked = np.zeros(n, dtype=bool)
    is_picked[first] = True
    min_sq = ((x - x[first]) ** 2).sum(axis=1)
    while len(picked) < n_select:
        best, best_i = -1.0, -1
        for i in range(n):  # lowest index among the maxima: strict '>' while scanning in index order
            if not is_picked[i] and min_sq[i] > best:
                best, best_i = min_sq[i], i
        picked.append(best_i)
        is_picked[best_i] = True
        min_sq = np.minimum(min_sq, ((x - x[best_i]) ** 2).sum(axis=1))
    return picked


@pytest.mark.parametrize("pool_size", [1, 3, 16, 2048])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_matches_reference_on_random_floats(pool_size, seed):
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    got = k_center_greedy(x, 250, seed=seed, pool_size=pool_size, row_block=64)
    assert got.tolist() == reference_k_center(x, 250, seed)


@pytest.mark.parametrize("pool_size", [1, 4, 64])
def test_matches_reference_with_ties_and_duplicates(pool_size):
    """Small integers: every distance is exact in float32, so ties are real and the lowest index must win."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(120, 3)).astype(np.float32)  # at most 27 distinct points: many duplicates
    got = k_center_greedy(x, 120, seed=5, pool_size=pool_size, row_block=17)
    ref = reference_k_center(x, 120, 5)
    assert got.tolist() == ref
    assert sorted(got.tolist()) == list(range(120))  # every row once, duplicates included


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 5),
    frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 1000),
    pool=st.integers(1, 70),
)
def test_matches_reference_property(n, d, frac, seed, pool):
    x = np.random.default_rng(seed).integers(-4, 5, size=(n, d)).astype(np.float32)
    k = max(1, int(n * frac))
    assert k_center_greedy(x, k, seed=seed, pool_size=pool, row_block=7).tolist() == reference_k_center(x, k, seed)


def test_deterministic_for_a_seed_and_seed_matters():
    x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    a = k_center_greedy(x, 100, seed=11)
    assert a.tolist() == k_center_greedy(x, 100, seed=11).tolist()
    assert a[0] == np.random.default_rng(11).integers(500)
    assert len(set(a.tolist())) == 100
    assert any(k_center_greedy(x, 100, seed=s)[0] != a[0] for s in range(12, 20))


def test_farthest_point_is_second_pick():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    first = int(np.random.default_rng(0).integers(4))
    got = k_center_greedy(x, 2, seed=0)
    assert got[0] == first
    far = int(np.argmax(((x - x[first]) ** 2).sum(1)))
    assert got[1] == far


def test_bad_inputs():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(EmpathyRecipesError):
        k_center_greedy(x, 0)
    with pytest.raises(EmpathyRecipesError):
        k_center_greedy(x, 5)
    with pytest.raises(EmpathyRecipesError):
        k_center_greedy(np.zeros((0, 2)), 1)
    with pytest.raises(EmpathyRecipesError):
        k_center_greedy(np.array([[np.nan, 0.0]]), 1)


def test_n_to_keep():
    assert n_to_keep(10, 0.9) == 9
    assert n_to_keep(100, 0.9) == 90
    assert n_to_keep(3, 0.1) == 1
    assert n_to_keep(0, 0.5) == 0
    assert n_to_keep(7, 1.0) == 7
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(EmpathyRecipesError):
            n_to_keep(10, bad)


def test_pool_and_bound_takes_the_largest_unpicked_rows_sorted_by_index():
    from empathy_recipes.kcenter import PICKED, pool_and_bound

    min_sq = np.array([5.0, PICKED, 9.0, 1.0, 7.0, 9.0])
    pool, bound = pool_and_bound(min_sq, 3)
    assert pool.tolist() == [2, 4, 5] and bound == 5.0
    pool, bound = pool_and_bound(min_sq, 5)  # every unpicked row: nothing outside to bound it
    assert pool.tolist() == [0, 2, 3, 4, 5] and bound == -np.inf


def test_checked_embeddings_is_a_contiguous_copy_of_the_asked_dtype():
    from empathy_recipes.kcenter import checked_embeddings

    x = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]
    got = checked_embeddings(x, 2, np.float32)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.tolist() == [[0, 2], [4, 6], [8, 10]]
    with pytest.raises(EmpathyRecipesError, match="n_select"):
        checked_embeddings(x, 4)
