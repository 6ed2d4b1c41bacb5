"""sysbench._kernels.sparse against slow, obviously correct references.

decompose: a Python loop over groups and columns; parts: their sum is W bit for bit and
each obeys N:M (counted independently); spmm: the fmaf_array loop of the pass order
(sysbench.workloads.sparse_gemm.spmm_reference), the cycle-stepped emulator on gathered
operands, and the float64 product within the error bound.
"""
import math

import numpy as np
import pytest

from sysbench._kernels import sparse
from sysbench.numerics import gemm_error_bound
from sysbench.workloads.sparse_gemm import pad_permute_columns, spmm_reference

NMS = [(2, 4), (1, 4), (2, 8), (1, 2), (3, 5), (4, 16)]


def random_weights(rng, k, cols, density, negative_zeros=True):
    w = rng.standard_normal((k, cols)).astype(np.float32)
    w[rng.random((k, cols)) >= density] = 0
    if negative_zeros:  # pruning by w * mask leaves -0.0 behind: those are zeros too
        w[(w == 0) & (rng.random((k, cols)) < 0.5)] = np.float32(-0.0)
    return w


def slow_group_counts(w, m):
    k, cols = w.shape
    g = math.ceil(k / m)
    out = np.zeros((g, cols), dtype=np.int64)
    for r in range(k):
        for c in range(cols):
            if w[r, c] != 0:
                out[r // m, c] += 1
    return out


def slow_decompose(w, n, m):
    """Straight from the definition: per group and column, the j-th nonzero in row order
    goes to pass j // n, slot j % n; unused slots are (+0.0, index 0)."""
    k, cols = w.shape
    g = math.ceil(k / m)
    counts = slow_group_counts(w, m)
    passes = math.ceil(counts.max() / n) if counts.size else 0
    values = np.zeros((passes, g * n, cols), dtype=np.float32)
    indices = np.zeros((passes, g * n, cols), dtype=np.uint8)
    for grp in range(g):
        for c in range(cols):
            j = 0
            for q in range(m):
                r = grp * m + q
                if r < k and w[r, c] != 0:
                    values[j // n, grp * n + j % n, c] = w[r, c]
                    indices[j // n, grp * n + j % n, c] = q
                    j += 1
    return values, indices


def bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def adversarial(k, cols, m, rng):
    """One full group, all zero, all dense, a single nonzero, and a lone dense column."""
    full = np.zeros((k, cols), np.float32)
    full[:m] = 1.5
    lone = np.zeros((k, cols), np.float32)
    lone[:, -1] = rng.standard_normal(k)
    single = np.zeros((k, cols), np.float32)
    single[k - 1, 0] = -2.0
    return [full, np.zeros((k, cols), np.float32), rng.standard_normal((k, cols)).astype(np.float32),
            single, lone]


def test_decompose_matches_slow_reference_and_sums_to_w():
    rng = np.random.default_rng(1)
    cases = 0
    for n, m in NMS:
        for k, cols in [(1, 1), (m, 3), (m + 1, 5), (3 * m - 1, 7), (37, 33), (64, 19)]:
            mats = [random_weights(rng, k, cols, d) for d in (0.1, 0.5, 0.9)] + adversarial(k, cols, m, rng)
            for w in mats:
                values, indices = sparse.decompose(w, n, m)
                ref_v, ref_i = slow_decompose(w, n, m)
                assert values.shape == ref_v.shape
                assert np.array_equal(bits(values), bits(ref_v)) and np.array_equal(indices, ref_i)
                # the number of parts is the formula, counted independently
                counts = slow_group_counts(w, m)
                assert values.shape[0] == math.ceil(counts.max() / n)
                # the parts add up to W bit for bit (-0.0 is a zero: it reads as +0.0)
                parts = sparse.expand(values, indices, n, m, k)
                total = np.zeros((k, cols), np.float32)
                for part in parts:
                    assert slow_group_counts(part, m).max(initial=0) <= n  # each obeys N:M
                    total = total + part
                canonical = np.where(w == 0, np.float32(0), w)
                assert np.array_equal(bits(total), bits(canonical))
                assert np.array_equal(bits(sparse.reconstruct(values, indices, n, m, k)), bits(canonical))
                # every nonzero lands in exactly one part
                assert np.array_equal(sum((p != 0).astype(int) for p in parts) if len(parts) else
                                      np.zeros((k, cols), int), (w != 0).astype(int))
                cases += 1
    assert cases == len(NMS) * 6 * 8


def test_decompose_threads_and_large_shape_agree():
    rng = np.random.default_rng(2)
    w = random_weights(rng, 1001, 700, 0.4)
    one = sparse.decompose(w, 2, 4, 1)
    two = sparse.decompose(w, 2, 4, 2)
    assert np.array_equal(bits(one[0]), bits(two[0])) and np.array_equal(one[1], two[1])
    total = sparse.reconstruct(*one, 2, 4, 1001)
    assert np.array_equal(bits(total), bits(sparse.canonical(w)))


def test_check_and_counts():
    rng = np.random.default_rng(3)
    w = random_weights(rng, 30, 9, 0.5)
    ok, counts = sparse.check(w, 2, 4)
    assert np.array_equal(counts, slow_group_counts(w, 4))
    assert ok == bool(slow_group_counts(w, 4).max() <= 2)
    values, indices = sparse.decompose(w, 2, 4)
    for part in sparse.expand(values, indices, 2, 4, 30):
        assert sparse.check(np.ascontiguousarray(part), 2, 4)[0]
    assert sparse.check(np.zeros((5, 5), np.float32), 1, 2)[0]


@pytest.mark.parametrize("call,fragment", [
    (lambda w: sparse.decompose(w, 2, 2), "n must satisfy 1 <= n < m"),
    (lambda w: sparse.decompose(w, 0, 4), "n must satisfy"),
    (lambda w: sparse.decompose(w, 2, 17), "m must be in 2..16"),
    (lambda w: sparse.decompose(w, 2.0, 4), "n must be an int"),
    (lambda w: sparse.decompose(w.astype(np.float64), 2, 4), "w must have dtype float32"),
    (lambda w: sparse.decompose(w[0], 2, 4), "w must be 2-D"),
    (lambda w: sparse.decompose(w[:0], 2, 4), "at least one row"),
    (lambda w: sparse.decompose(np.where(w == w[1, 2], np.nan, w).astype(np.float32), 2, 4), "w[1, 2] = nan"),
    (lambda w: sparse.check(np.where(w == w[3, 0], np.inf, w).astype(np.float32), 2, 4), "w must be finite"),
    (lambda w: sparse.decompose(w.tolist(), 2, 4), "w must be a numpy array"),
    (lambda w: sparse.permute(w, 4, 4), "n must satisfy"),
    (lambda w: sparse.decompose(w, 1, 1), "m must be in 2..16"),
    (lambda w: sparse.lower_bound(np.where(w == w[2, 3], np.nan, w).astype(np.float32), 2, 4), "w[2, 3] = nan"),
])
def test_wrapper_errors_name_the_argument(call, fragment):
    w = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=None) as info:
        call(w)
    assert fragment in str(info.value)


# ------------------------------------------------------------------ permutation

def clustered_weights(rng, k, cols, dense_rows):
    """Rows 0..dense_rows-1 nearly dense, the rest very sparse: the identity order needs
    M/N passes, spreading the dense rows one per group needs fewer."""
    w = np.zeros((k, cols), np.float32)
    w[:dense_rows] = rng.standard_normal((dense_rows, cols))
    sparse_part = rng.standard_normal((k - dense_rows, cols)) * (rng.random((k - dense_rows, cols)) < 0.02)
    w[dense_rows:] = sparse_part
    return w


def check_permutation(w, n, m):
    k = w.shape[0]
    kp = sparse.groups(k, m) * m
    perm, before, after, bound = sparse.permute(w, n, m)
    assert sorted(perm.tolist()) == list(range(kp))
    assert before == sparse.decompose(w, n, m)[0].shape[0]
    assert bound <= after <= before
    padded = np.zeros((kp, w.shape[1]), np.float32)
    padded[:k] = w
    permuted = np.ascontiguousarray(padded[perm])
    values, indices = sparse.decompose(permuted, n, m)
    assert values.shape[0] == after
    total = sparse.reconstruct(values, indices, n, m, kp)
    assert np.array_equal(bits(total), bits(sparse.canonical(permuted)))
    if after == before:
        assert np.array_equal(perm, np.arange(kp))  # falls back to the identity
    return perm, before, after, bound, values, indices


def test_permutation_never_increases_passes_and_respects_bound():
    rng = np.random.default_rng(4)
    for n, m in NMS[:4]:
        for k, cols in [(16, 8), (30, 12), (67, 20)]:
            for density in (0.1, 0.3, 0.6):
                w = random_weights(rng, k, cols, density)
                _, before, after, bound = check_permutation(w, n, m)[:4]
                per_col = np.count_nonzero(w, axis=0).max()
                assert bound == math.ceil(math.ceil(per_col / sparse.groups(k, m)) / n)


def test_permutation_helps_clustered_weights_and_is_undone_in_the_output():
    rng = np.random.default_rng(5)
    w = clustered_weights(rng, 62, 40, 15)  # K not a multiple of 4: padded to 64
    perm, before, after, bound, values, indices = check_permutation(w, 2, 4)
    assert before == 2 and after == 1 == bound
    a = rng.standard_normal((9, 62)).astype(np.float32)
    a_used = pad_permute_columns(a, 64, perm)
    out = sparse.spmm(a_used, values, indices, 2, 4, 8)
    assert np.array_equal(bits(out), bits(spmm_reference(a_used, values, indices, 2, 4, 8)))
    exact = a.astype(np.float64) @ w.astype(np.float64)  # original order: the permutation is undone
    assert np.all(np.abs(out - exact) <= gemm_error_bound(a, w, 64))


# ------------------------------------------------------------------ sparse GEMM

SPMM_SHAPES = [  # rows of A, K, cols, fold depth
    (1, 4, 1, 1), (1, 1, 1, 4), (5, 8, 3, 3), (33, 30, 13, 7), (17, 64, 40, 16), (70, 37, 25, 1000),
    (64, 128, 48, 128), (3, 21, 50, 2),
]


@pytest.mark.parametrize("isa", sparse.available_isas())
def test_spmm_matches_pass_order_reference_bit_exactly(isa, restore_isa):
    rng = np.random.default_rng(6)
    sparse.set_isa(isa)
    for n, m in NMS:
        for rows, k, cols, depth in SPMM_SHAPES:
            for density in (0.3, 0.8):
                w = random_weights(rng, k, cols, density)
                values, indices = sparse.decompose(w, n, m)
                kp = sparse.groups(k, m) * m
                a = pad_permute_columns(rng.standard_normal((rows, k)).astype(np.float32), kp,
                                        np.arange(kp))
                out = sparse.spmm(a, values, indices, n, m, depth, threads=1 + (rows % 2))
                ref = spmm_reference(a, values, indices, n, m, depth)
                assert np.array_equal(bits(out), bits(ref)), (isa, n, m, rows, k, cols, depth)
                exact = a[:, :k].astype(np.float64) @ w.astype(np.float64)
                chain = max(k, values.shape[0] * values.shape[1])
                assert np.all(np.abs(out - exact) <= gemm_error_bound(a[:, :k], w, chain))


def test_spmm_long_folds_bit_exact_on_every_isa(restore_isa):
    """Folds longer than a micro-kernel piece (its psums wait in memory between pieces)
    and several passes, on every path: still the reference's bits."""
    rng = np.random.default_rng(16)
    for n, m in [(2, 4), (1, 4), (2, 8)]:
        w = random_weights(rng, 2048, 9, 0.6)
        values, indices = sparse.decompose(w, n, m)
        assert values.shape[0] > 1
        a = rng.standard_normal((5, 2048)).astype(np.float32)
        for depth in (1000, values.shape[1]):
            ref = spmm_reference(a, values, indices, n, m, depth)
            for isa in sparse.available_isas():
                sparse.set_isa(isa)
                got = sparse.spmm(a, values, indices, n, m, depth, threads=2)
                assert np.array_equal(bits(got), bits(ref)), (isa, n, m, depth)


def test_spmm_special_values_and_zero_passes(restore_isa):
    rng = np.random.default_rng(7)
    w = np.zeros((8, 5), np.float32)
    values, indices = sparse.decompose(w, 2, 4)
    assert values.shape[0] == 0
    out = sparse.spmm(np.ones((3, 8), np.float32), values, indices, 2, 4, 4)
    assert out.shape == (3, 5) and not out.any()
    # tiny products underflow to signed zeros: the order decides the sign, so the fast
    # paths must still give the reference's bits
    w = (rng.standard_normal((16, 9)) * 1e-30).astype(np.float32)
    w[rng.random((16, 9)) < 0.5] = 0
    a = (rng.standard_normal((6, 16)) * 1e-20).astype(np.float32)
    values, indices = sparse.decompose(w, 2, 4)
    ref = spmm_reference(a, values, indices, 2, 4, 3)
    for isa in sparse.available_isas():
        sparse.set_isa(isa)
        assert np.array_equal(bits(sparse.spmm(a, values, indices, 2, 4, 3)), bits(ref)), isa


def test_spmm_equals_emulator_on_gathered_operands():
    """The pass order is the foundation's systolic order: per output column, the gathered
    A (m x P*Kc: the element each slot selects) times the slot values on a ws array whose
    fold depth divides Kc, bit for bit."""
    from sysbench.models.emulator import emulate_gemm

    rng = np.random.default_rng(8)
    for n, m, k, depth in [(2, 4, 32, 4), (1, 4, 24, 3), (2, 8, 32, 8)]:
        w = random_weights(rng, k, 6, 0.6)
        values, indices = sparse.decompose(w, n, m)
        passes, kc, cols = values.shape
        assert kc % depth == 0
        a = rng.standard_normal((5, k)).astype(np.float32)
        out = sparse.spmm(a, values, indices, n, m, depth)
        for c in range(cols):
            selected = np.concatenate([(np.arange(kc) // n) * m + indices[p, :, c] for p in range(passes)])
            gathered = np.ascontiguousarray(a[:, selected])
            slot_values = np.ascontiguousarray(values[:, :, c].reshape(-1, 1))
            emulated, _ = emulate_gemm(gathered, slot_values, depth, 4, "ws", "serial")
            assert np.array_equal(bits(emulated[:, 0]), bits(out[:, c])), (n, m, c)


@pytest.mark.parametrize("change,fragment", [
    (lambda a, v, i: (a[:, :-1], v, i), "a must have 16 columns"),
    (lambda a, v, i: (a, v, i.astype(np.int32)), "indices must be a uint8 array"),
    (lambda a, v, i: (a, v.astype(np.float64), i), "values must be a 3-D float32"),
    (lambda a, v, i: (a, v, np.full_like(i, 4)), "indices must be < m = 4"),
    (lambda a, v, i: (a, v[:, :-1], i[:, :-1]), "must be a positive multiple of n"),
])
def test_spmm_errors(change, fragment):
    rng = np.random.default_rng(9)
    values, indices = sparse.decompose(random_weights(rng, 16, 5, 0.5), 2, 4)
    a = rng.standard_normal((3, 16)).astype(np.float32)
    with pytest.raises(ValueError) as info:
        sparse.spmm(*change(a, values, indices), 2, 4, 4)
    assert fragment in str(info.value)
    with pytest.raises(ValueError, match="fold_depth must be >= 1"):
        sparse.spmm(a, values, indices, 2, 4, 0)
