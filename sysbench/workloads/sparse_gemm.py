"""sparse_gemm: fine-grained N:M sparsity emulated by an exact decomposition.

An array with N:M support skips zero weights only when every group of M consecutive
weights along the reduction dimension holds at most N nonzeros. The weight matrix W
(K x N_out; the GEMM is A (m x K) times W) is split into P = ceil(max group nonzeros / N)
N:M-constrained matrices whose sum is W bit for bit (zeros of either sign are zeros), each
run as a sparse pass that streams K*N/M compressed reduction rows instead of K.
Optionally one permutation of the reduction dimension (W's rows and A's columns alike)
balances nonzeros across groups first; it never needs more passes than the identity.

Route: sparse when worthwhile (P * N / M < 1: the passes stream fewer rows than dense),
otherwise the case runs the dense array GEMM and its metrics say why.

Numerics of the sparse route (sysbench._kernels.sparse.spmm): one output accumulator;
for each pass in order, for each fold of F compressed rows in order (F = array rows for
ws and is; os keeps the whole pass in the PE, F = K*N/M): psum = +0, one fmaf per
compressed row in order (the A element the slot's index selects times the slot's value),
then out = out + psum. `spmm_reference` is the slow explicit loop with `fmaf_array`; the
fast kernel must equal it bit for bit.

Cycles: per pass the foundation model (models.systolic.gemm_cycles) with K replaced by the
compressed K*N/M, summed over passes; index metadata (one uint8 per stored value) is read
with the values and counted in the SRAM bytes, not in the cycles.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.memory import memory_metrics
from ..models.sparse import fold_depth, sparse_cycles, worthwhile
from ..models.systolic import gemm_cycles
from ..numerics import gemm_error_bound, random_operand, to_operand
from ._array import array_gemm, check_gemm, emulator_affordable, operand_bytes
from .base import CaseError, Key, Run, Timed, Validation, Workload

PATTERNS = ("random", "nm", "rowwise")
DEFAULT_DENSITY = 0.5
# spmm_reference (a Python loop over compressed rows) runs when the work is at most this
REFERENCE_BUDGET = 16_000_000  # output elements x compressed rows x passes


def parse_nm(text) -> tuple[tuple[int, int] | None, str | None]:
    """'2:4' -> ((2, 4), None); a bad value -> (None, message)."""
    parts = str(text).split(":")
    try:
        n, m = (int(p) for p in parts)
    except ValueError:
        return None, f"must look like 'N:M' (e.g. '2:4'), got {text!r}"
    if not (1 <= n < m <= 16):
        return None, f"needs 1 <= N < M <= 16 (an in-group index must fit), got {text!r}"
    return (n, m), None


# ------------------------------------------------------------------ weights

_FILE_CACHE: dict = {}  # the last weights file read: check() and plan() both read it


def load_weights(path: str, key: str | None) -> np.ndarray:
    """A user's weight matrix from .npy or .npz (array `key`), as given (not yet rounded).
    Raises CaseError naming the suite key ("weights" or "key") for every bad file."""
    file = Path(path)
    if file.is_dir():
        raise CaseError("weights", f"{path} is a directory, not a .npy or .npz file")
    if not file.is_file():
        raise CaseError("weights", f"no such file: {path}")
    stat = file.stat()
    cache_key = (str(file), key, stat.st_mtime_ns, stat.st_size)
    if cache_key in _FILE_CACHE:
        return _FILE_CACHE[cache_key]
    suffix = file.suffix.lower()
    label = str(file)
    try:
        if suffix == ".npy":
            if key is not None:
                raise CaseError("key", f"key {key!r} applies to .npz files only; {path} is .npy")
            w = np.load(file, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                names = list(archive.files)
                if key is None:
                    if len(names) != 1:
                        raise CaseError("key", f"{path} holds {len(names)} arrays "
                                               f"({', '.join(names) or 'none'}): set key")
                    key = names[0]
                elif key not in names:
                    raise CaseError("key", f"no array {key!r} in {path}; it holds: "
                                           f"{', '.join(names) or 'nothing'}")
                w = archive[key]
            label = f"{path}[{key}]"
        else:
            raise CaseError("weights", f"{path} must be a .npy or .npz file")
    except CaseError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CaseError("weights", f"cannot read {path}: {exc}") from None
    where = "key" if suffix == ".npz" else "weights"
    if w.dtype.kind != "f":
        raise CaseError(where, f"{label} must hold floats (float16/32/64), got dtype {w.dtype}")
    if w.ndim != 2:
        raise CaseError(where, f"{label} must be 2-D (K x N, K the reduction), got shape {w.shape}")
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise CaseError(where, f"{label} is empty: shape {w.shape}")
    bad = ~np.isfinite(w)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CaseError(where, f"{label} holds NaN or inf (first at [{r}, {c}] = {w[r, c]})")
    _FILE_CACHE.clear()  # keep one file in memory
    _FILE_CACHE[cache_key] = w
    return w


def generate_weights(k: int, n: int, pattern: str, density: float, nm: tuple[int, int],
                     dtype: str, seed: int) -> np.ndarray:
    """Pruned K x N weights: random (each weight kept with probability density), rowwise
    (each output neuron keeps its round(density*K) largest-magnitude weights) or nm (every
    group of M rows keeps N random positions per column: already N:M)."""
    rng = np.random.default_rng(seed)
    w = random_operand(rng, (k, n), dtype)
    if pattern == "random":
        keep = rng.random((k, n)) < density
    elif pattern == "rowwise":
        kept = int(round(density * k))
        keep = np.zeros((k, n), dtype=bool)
        if kept:
            top = np.argpartition(-np.abs(w), kept - 1, axis=0)[:kept]
            np.put_along_axis(keep, top, True, axis=0)
    else:
        sn, sm = nm
        groups = -(-k // sm)
        chosen = np.argsort(rng.random((groups, sm, n)), axis=1)[:, :sn]
        keep = np.zeros((groups, sm, n), dtype=bool)
        np.put_along_axis(keep, chosen, True, axis=1)
        keep = keep.reshape(groups * sm, n)[:k]
    return np.where(keep, w, np.float32(0)).astype(np.float32)


def round_weights(w: np.ndarray, dtype: str, path: str) -> np.ndarray:
    """A weights file's matrix rounded to the array dtype; CaseError when a value overflows
    it (float64 or fp32 weights on an fp16 array can)."""
    with np.errstate(over="ignore"):
        rounded = to_operand(w, dtype)
    if not np.isfinite(rounded).all():
        largest = float(np.abs(w).max())
        raise CaseError("weights", f"{path} holds values beyond {dtype}'s range "
                                   f"(largest magnitude {largest:.4g})")
    return rounded


def weight_matrix(p: dict, array) -> np.ndarray:
    if p["weights"] is not None:
        return round_weights(load_weights(p["weights"], p["key"]), array.dtype, p["weights"])
    density = DEFAULT_DENSITY if p["density"] is None else p["density"]
    return generate_weights(p["k"], p["n"], p["pattern"] or "random", density,
                            parse_nm(p["nm"])[0], array.dtype, p["weight_seed"])


# ------------------------------------------------------------------ the plan

@dataclass(frozen=True)
class SparsePlan:
    """Weights, their decomposition (after the permutation when asked) and the route."""

    w: np.ndarray          # the weights as given (rounded to the array dtype)
    w_used: np.ndarray     # padded to kp rows and permuted when that needs fewer passes
    perm: np.ndarray       # the reduction permutation applied (identity when none)
    values: np.ndarray     # (passes, K*N/M, n) compressed values
    indices: np.ndarray    # (passes, K*N/M, n) uint8 in-group indices
    n_of_nm: int
    m_of_nm: int
    k: int
    n: int
    kp: int
    groups: int
    counts: np.ndarray     # nonzeros per group and column
    passes: int
    passes_identity: int
    lower_bound: int

    @property
    def compressed_k(self) -> int:
        return self.groups * self.n_of_nm

    @property
    def sparse_route(self) -> bool:
        return worthwhile(self.passes, self.n_of_nm, self.m_of_nm)


def make_plan(p, array) -> SparsePlan:
    from .._kernels import sparse

    sn, sm = parse_nm(p["nm"])[0]
    w = weight_matrix(p, array)
    k, n = w.shape
    groups = sparse.groups(k, sm)
    kp = groups * sm
    counts = sparse.counts(w, sm)
    passes_identity = sparse.passes_for(counts, sn)
    bound = sparse.lower_bound(w, sn, sm)
    passes = passes_identity
    if p["permute"]:
        perm, _, passes, _ = sparse.permute(w, sn, sm)
    w_used = w
    if p["permute"] and passes < passes_identity:
        w_pad = np.zeros((kp, n), dtype=np.float32)
        w_pad[:k] = w
        w_used = np.ascontiguousarray(w_pad[perm])
    else:
        perm = np.arange(kp, dtype=np.int64)
    values, indices = sparse.decompose(w_used, sn, sm)
    return SparsePlan(w, w_used, perm, values, indices, sn, sm, k, n, kp, groups, counts, passes,
                      passes_identity, bound)


# ------------------------------------------------------------------ the reference

def spmm_reference(a: np.ndarray, values: np.ndarray, indices: np.ndarray, sn: int, sm: int,
                   depth: int) -> np.ndarray:
    """The sparse pass order written out, one compressed row at a time with fmaf_array:
    out = +0; per pass, per fold of `depth` compressed rows: psum = +0,
    psum = fmaf(a[:, g*M + q], v, psum) row by row, out = out + psum."""
    from .._kernels.systolic import fmaf_array

    passes, kc, cols = values.shape
    out = np.zeros((a.shape[0], cols), dtype=np.float32)
    for p in range(passes):
        for f0 in range(0, kc, depth):
            psum = np.zeros_like(out)
            for r in range(f0, min(f0 + depth, kc)):
                selected = (r // sn) * sm + indices[p, r].astype(np.int64)  # per column
                psum = fmaf_array(a[:, selected], values[p, r][None, :], psum)
            out = out + psum
    return out


def pad_permute_columns(a: np.ndarray, kp: int, perm: np.ndarray) -> np.ndarray:
    """A's columns padded with zeros to kp and permuted like W's rows."""
    padded = np.zeros((a.shape[0], kp), dtype=np.float32)
    padded[:, :a.shape[1]] = a
    return np.ascontiguousarray(padded[:, perm])


# ------------------------------------------------------------------ the workload

@dataclass(frozen=True)
class SparseInputs:
    a: np.ndarray       # m x k activations
    a_used: np.ndarray  # padded to kp columns and permuted like W's rows (the sparse route)


class SparseGemm(Workload):
    kind = "sparse_gemm"
    description = ("N:M sparsity by exact decomposition into N:M matrices, sparse passes "
                   "on the array, and the dense fallback when they do not pay")
    keys = {
        "m": Key("int", minimum=1, help="rows of A and of the output"),
        "k": Key("int", default=None, minimum=1, help="reduction dimension (rows of W); from the file with weights"),
        "n": Key("int", default=None, minimum=1, help="columns of W and of the output; from the file with weights"),
        "nm": Key("str", default="2:4", help="the array's sparsity support 'N:M' (1 <= N < M <= 16)"),
        "density": Key("float", default=None, help="fraction of nonzero weights (random, rowwise; default 0.5)"),
        "pattern": Key("str", default=None, choices=PATTERNS,
                       help="random | nm (already N:M) | rowwise (magnitude pruning per output neuron)"),
        "permute": Key("bool", default=False, help="permute the reduction dimension to need fewer passes"),
        "weights": Key("path", default=None, help="a .npy or .npz file of weights (K x N)"),
        "key": Key("str", default=None, help="array name in the .npz file"),
        "weight_seed": Key("int", default=0, minimum=0, help="seed of the generated weights"),
    }

    def check(self, p, array):
        problems = []
        _, error = parse_nm(p["nm"])
        if error:
            problems.append(("nm", error))
        if array.dtype == "int8":
            problems.append(("array", "sparse_gemm runs float arrays (fp32, bf16, fp16), not int8"))
        density = p["density"]
        if density is not None and not 0 < density <= 1:
            problems.append(("density", f"must be in (0, 1], got {density}"))
        if p["weights"] is None:
            for key in ("k", "n"):
                if p[key] is None:
                    problems.append((key, "missing (required unless weights is given)"))
            if p["key"] is not None:
                problems.append(("key", "names an array of the weights file; there is no weights"))
            if p["pattern"] == "nm" and density is not None:
                problems.append(("density", "pattern 'nm' keeps N of every M weights; drop density"))
            return problems
        for key in ("pattern", "density"):
            if p[key] is not None:
                problems.append((key, "describes generated weights; drop it when weights is given"))
        try:
            w = load_weights(p["weights"], p["key"])
            if array.dtype != "int8":
                round_weights(w, array.dtype, p["weights"])
        except CaseError as exc:
            return problems + [(exc.key, str(exc))]
        for key, size in (("k", w.shape[0]), ("n", w.shape[1])):
            if p[key] is not None and p[key] != size:
                problems.append((key, f"is {p[key]} but the weights file has {key} = {size}"))
        return problems

    def working_set(self, p, array, numerics):
        k, n = p.k, p.n
        if p.weights is not None:
            try:
                k, n = load_weights(p.weights, p.key).shape
            except CaseError:
                return 0  # check() has reported the file
        sm = parse_nm(p.nm)[0][1]
        kp = -(-k // sm) * sm
        # generated weights with their float64 mask and ranks, the padded/permuted copy, and the
        # decomposition (at most M / N passes of kp * N / M values + indices)
        plan = 8 * 4 * kp * n
        if not numerics:
            return plan
        return plan + operand_bytes(array, p.m, kp, n) + 8 * p.m * kp

    plan = staticmethod(make_plan)

    def model(self, p, array, pl):
        sn, sm = pl.n_of_nm, pl.m_of_nm
        k, n, m, passes = pl.k, pl.n, p.m, pl.passes
        kc = pl.compressed_k
        dense = gemm_cycles(array, m, k, n)
        sparse = sparse_cycles(array, m, kc, n, passes)
        sparse_route = pl.sparse_route
        nonzeros = int(np.count_nonzero(pl.w))
        ob = array.operand_bytes
        histogram = np.bincount(pl.counts.ravel(), minlength=sm + 1).tolist()
        ratio = f"passes * N / M = {passes} * {sn} / {sm} = {passes * sn / sm:.3g}"
        if sparse_route:
            reason = f"{ratio} < 1: the passes stream fewer reduction rows than dense"
        else:
            reason = (f"{ratio} >= 1: the passes would stream at least as many reduction rows "
                      f"as dense, so the case runs dense")
        route = sparse if sparse_route else dense
        metrics = {
            "route": "sparse" if sparse_route else "dense",
            "route_reason": reason,
            "worthwhile": sparse_route,
            "cycles": route["cycles"],
            "utilization": route["utilization"],
            "time_us": route["time_us"],
            "useful_macs": m * nonzeros,
            "sparse_cycles": sparse["cycles"],
            "dense_cycles": dense["cycles"],
            "speedup": dense["cycles"] / sparse["cycles"] if sparse["cycles"] else None,
            "passes": passes,
            "passes_identity": pl.passes_identity,
            "passes_lower_bound": pl.lower_bound,
            "permuted": bool(p.permute) and passes < pl.passes_identity,
            "already_nm": pl.passes_identity <= 1,
            "density": nonzeros / (k * n),
            "nonzeros": nonzeros,
            "nonzeros_per_group_histogram": histogram,
            "k": k,
            "n": n,
            "compressed_k": kc,
            "padded_k": pl.kp,
            "padding": (f"k = {k} is not a multiple of M = {sm}: padded with "
                        f"{pl.kp - k} zero rows to {pl.kp}") if pl.kp != k else "",
            "dense_weight_bytes": k * n * ob,
            "compressed_value_bytes": passes * kc * n * ob,
            "index_bytes": passes * kc * n,
            "index_bits_needed": max(1, math.ceil(math.log2(sm))),
            "sparse_macs": sparse["macs"],
            "dense_macs": dense["macs"],
            "sparse_filter_sram_read_bytes": sparse["filter_sram_read_bytes"] + sparse["index_sram_read_bytes"],
            "dense_filter_sram_read_bytes": dense["filter_sram_read_bytes"],
        }
        metrics["compressed_bytes"] = metrics["compressed_value_bytes"] + metrics["index_bytes"]
        metrics["bytes_ratio"] = metrics["compressed_bytes"] / metrics["dense_weight_bytes"]
        if p.permute:
            metrics["passes_permuted"] = passes
        # the memory system on the route taken; a sparse pass's filter element is value + index byte
        metrics.update(memory_metrics(array, [(m, kc, n)] * passes, sparse, filter_element_bytes=ob + 1)
                       if sparse_route else memory_metrics(array, [(m, k, n)], dense))
        return metrics

    def inputs(self, p, array, pl, rng):
        a = random_operand(rng, (p.m, pl.k), array.dtype)
        return SparseInputs(a, pad_permute_columns(a, pl.kp, pl.perm) if pl.sparse_route else a)

    def timed(self, run: Run) -> Timed:
        """The GEMM (sparse passes or dense); beside it, as peers timed by the same rules, the
        decomposition (and permutation) and, for the sparse route, the dense kernel."""
        from .._kernels import sparse

        pl, inputs, array, threads = run.plan, run.inputs, run.array, run.threads
        sn, sm = pl.n_of_nm, pl.m_of_nm
        depth = fold_depth(array, pl.compressed_k)
        dense = lambda: array_gemm(inputs.a, pl.w, array, threads)  # noqa: E731
        peers = {"decompose": lambda: sparse.decompose(pl.w_used, sn, sm, threads)}
        if run.params.permute:
            peers["permute"] = lambda: sparse.permute(pl.w, sn, sm)
        if not pl.sparse_route:
            return Timed(dense, peers=peers)
        peers["dense"] = dense
        return Timed(lambda: sparse.spmm(inputs.a_used, pl.values, pl.indices, sn, sm, depth, threads),
                     peers=peers)

    def observe(self, run: Run, output) -> dict:
        return {"decompose_bytes": run.plan.w_used.nbytes}

    def validate(self, run: Run, output) -> Validation:
        from .._kernels import sparse

        pl, array, a = run.plan, run.array, run.inputs.a
        sn, sm = pl.n_of_nm, pl.m_of_nm
        # the decomposition: its parts add up to W bit for bit, and every part obeys N:M
        total = sparse.reconstruct(pl.values, pl.indices, sn, sm, pl.w_used.shape[0])
        exact_parts = total.tobytes() == sparse.canonical(pl.w_used).tobytes()
        parts_nm = all(sparse.check(np.ascontiguousarray(part), sn, sm)[0] for part in
                       sparse.expand(pl.values, pl.indices, sn, sm, pl.w_used.shape[0]))
        extra = {"decomposition_exact": exact_parts, "parts_obey_nm": parts_nm}
        if not pl.sparse_route:
            cycles = gemm_cycles(array, run.params.m, pl.k, pl.n)["cycles"]
            result = check_gemm([(a, pl.w)], [output], array, emulator_affordable(cycles, array))
            result.passed = result.passed and exact_parts and parts_nm
            result.extra.update(extra)
            return result
        kc = pl.compressed_k
        exact = a.astype(np.float64) @ pl.w.astype(np.float64)
        err = np.abs(output.astype(np.float64) - exact)
        worst = float(err.max()) if err.size else 0.0
        bound = gemm_error_bound(a, pl.w, max(pl.k, pl.passes * kc))
        ok = bool(np.all(err <= bound)) and exact_parts and parts_nm
        reference, level, detail = "float64 (error bound)", "in bound", ""
        if run.params.m * pl.n * kc * pl.passes <= REFERENCE_BUDGET:
            ref = spmm_reference(run.inputs.a_used, pl.values, pl.indices, sn, sm, fold_depth(array, kc))
            same = ref.tobytes() == output.tobytes()
            ok &= same
            reference, level = "sparse pass reference (fmaf, bit-exact) + float64 bound", "bit-exact"
            if not same:
                detail = "differs from the sparse pass reference"
        return Validation(reference, worst, ok, level, detail=detail, extra=extra)

    def plots(self, cases):
        return sparse_plot(cases)


def sparse_plot(cases: list[dict]) -> list:
    from ..plots import Plot, grouped_bars, new_figure, short_label

    rows = [(short_label(c, drop_array=False), c["metrics"]["dense_cycles"], c["metrics"]["sparse_cycles"])
            for c in cases if "dense_cycles" in c["metrics"] and "sparse_cycles" in c["metrics"]]
    if not rows:
        return []
    labels = [r[0] for r in rows]
    fig, axes = new_figure(max(7.0, 0.45 * len(rows) + 3), 5.0)
    grouped_bars(axes[0][0], labels, {"dense": [r[1] for r in rows], "sparse (all passes)": [r[2] for r in rows]},
                 log="auto")
    axes[0][0].set_ylabel("cycles")
    fig.suptitle("sparse_gemm: dense vs N:M sparse cycles")
    return [Plot("sparse", "sparse_gemm: dense vs sparse cycles",
                 "Cycles of the dense GEMM against the sum over the N:M sparse passes.", fig)]


WORKLOAD = SparseGemm()
