"""Design-space sweeps: a [[cases]] entry's grid of model-only cases as one table.

A `Block` is the cartesian product of one case's swept keys (arrays included) that its kind
can model as a table (`Workload.model_table`): no Case object and no metrics dict per
combination on the hot path. `evaluate(block, start, stop)` gives the rows [start, stop) as
numpy columns — parameters, the array of each row, the model's figures — which the runner
streams to the outputs and the summaries. The rows and figures are the same, bit for bit and
in the same order, as the per-case path (tests hold the two together).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .hardware import Array
from .models.systolic import DATAFLOW_CODES

CHUNK_ROWS = 1 << 15  # rows evaluated at a time: memory stays flat whatever the sweep's size
MAX_CASES = 10**7     # a run past this many cases needs --yes (about two minutes a core)


@dataclass
class Block:
    suite: str
    name: str
    kind: str
    source: str
    options: dict       # key -> [(tag text, parsed value)]: every kind key, "array" and the common keys
    swept: list         # the swept keys, in product order (the last varies fastest)
    kind_keys: list     # the kind's keys, in the order its params are written
    common: dict        # numerics, repeats, warmup, seed, rounds, min_time
    shape: tuple = field(init=False)

    def __post_init__(self):
        self.shape = tuple(len(self.options[k]) for k in self.swept)

    def __len__(self) -> int:
        return math.prod(self.shape)

    @property
    def arrays(self) -> list[Array]:
        return [a for _, a in self.options["array"]]

    def option_indices(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """For rows [start, stop): the index into options[key] of every swept key."""
        flat = np.arange(start, stop, dtype=np.int64)
        if not self.swept:
            return {}
        return dict(zip(self.swept, np.unravel_index(flat, self.shape)))

    def ids(self, indices: dict[str, np.ndarray], rows: int) -> list[str]:
        prefix = f"{self.suite}/{self.name}"
        if not self.swept:
            return [prefix] * rows
        tags = [np.array([f"{key}={tag}" for tag, _ in self.options[key]], dtype=object)[indices[key]]
                for key in self.swept]
        return [f"{prefix}[{','.join(parts)}]" for parts in zip(*tags)]

    def columns(self, indices: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Each kind key's value per row: int/float columns, pairs as (rows, 2), else objects."""
        out = {}
        for key in self.kind_keys:
            values = [v for _, v in self.options[key]]
            column = _as_column(values)
            out[key] = column[indices[key]] if key in indices else np.repeat(column[:1], rows, axis=0)
        return out

    def array_index(self, indices: dict[str, np.ndarray], rows: int) -> np.ndarray:
        return indices["array"] if "array" in indices else np.zeros(rows, dtype=np.int64)

    def cases(self, start: int = 0, stop: int | None = None) -> list:
        """Rows [start, stop) as Case objects (the per-case path's view of the same grid)."""
        from .suite import Case
        from .workloads import registry

        workload = registry()[self.kind]
        stop = len(self) if stop is None else stop
        indices = self.option_indices(start, stop)
        out = []
        for row, case_id in enumerate(self.ids(indices, stop - start)):
            chosen = {k: self.options[k][indices[k][row] if k in indices else 0] for k in self.options}
            array = chosen["array"][1]
            params = workload.make_params({k: chosen[k][1] for k in self.kind_keys})
            swept = {k: chosen[k][0] for k in self.swept}
            out.append(Case(case_id, self.suite, self.name, self.kind, params, array, source=self.source,
                            swept=swept, **self.common))
        return out


def _as_column(values: list) -> np.ndarray:
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, float) for v in values):
        return np.array(values, dtype=np.float64)
    if all(isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v) for v in values):
        return np.array(values, dtype=np.int64).reshape(len(values), 2)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def array_columns(arrays: list[Array]) -> dict[str, np.ndarray]:
    """The arrays of a block as columns, one entry per array (index them by row)."""
    return {
        "rows": np.array([a.rows for a in arrays], dtype=np.int64),
        "cols": np.array([a.cols for a in arrays], dtype=np.int64),
        "dataflow": np.array([DATAFLOW_CODES[a.dataflow] for a in arrays], dtype=np.int64),
        "serial": np.array([a.weight_load == "serial" for a in arrays], dtype=bool),
        "operand_bytes": np.array([a.operand_bytes for a in arrays], dtype=np.int64),
        "int8": np.array([a.dtype == "int8" for a in arrays], dtype=bool),
        "clock_ghz": np.array([a.clock_ghz for a in arrays], dtype=np.float64),
    }


@dataclass
class TableChunk:
    """Rows [start, stop) of a block, evaluated."""

    block: Block
    start: int
    stop: int
    ids: list[str]
    array_index: np.ndarray            # index into block.arrays, per row
    params: dict[str, np.ndarray]      # the kind keys' values per row
    metrics: dict[str, np.ndarray]     # the model's figures per row
    problems: list[str] = field(default_factory=list)
    rendered: dict = field(default_factory=dict)  # output made in the worker (sinks.render_csv)

    def __len__(self) -> int:
        return self.stop - self.start

    def metric_rows(self) -> list[dict]:
        metrics = {k: _python(v) for k, v in self.metrics.items()}
        return [{k: v[i] for k, v in metrics.items()} for i in range(len(self))]

    def case_dicts(self):
        """The rows as result-document cases (what CaseResult.to_dict gives per case)."""
        arrays = [a.to_dict() for a in self.block.arrays]
        params = {k: _python(v) for k, v in self.params.items()}
        metrics = {k: _python(v) for k, v in self.metrics.items()}
        common = self.block.common
        for i, case_id in enumerate(self.ids):
            yield {"id": case_id, "suite": self.block.suite, "name": self.block.name, "kind": self.block.kind,
                   "params": {k: v[i] for k, v in params.items()}, "array": arrays[self.array_index[i]],
                   "numerics": common["numerics"], "seed": common["seed"],
                   "metrics": {k: v[i] for k, v in metrics.items()}, "timing": None, "validation": None}


def _python(column: np.ndarray) -> list:
    """A column as Python values (ints, floats, lists for pairs), as JSON writes them."""
    return column.tolist()


def evaluate(block: Block, start: int, stop: int) -> TableChunk:
    """Rows [start, stop) of a block: checks, then the kind's table model."""
    from .workloads import registry

    workload = registry()[block.kind]
    indices = block.option_indices(start, stop)
    rows = stop - start
    params = block.columns(indices, rows)
    arrays = array_columns(block.arrays)
    array_index = block.array_index(indices, rows)
    per_row = {k: v[array_index] for k, v in arrays.items()}
    problems = []
    ids = block.ids(indices, rows)
    for row, key, message in workload.check_table(params, per_row)[:20]:
        problems.append(f"{block.source}: case {block.name!r} key {key!r}: {message} (case {ids[row]})")
    metrics = {} if problems else workload.model_table(params, per_row)
    return TableChunk(block, start, stop, ids, array_index, params, metrics, problems)


def chunks(block: Block, rows: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    return [(start, min(start + rows, len(block))) for start in range(0, len(block), rows)]


def mpi_executor():
    """The mpi4py.futures pool of the MPI job this process is the root of: workers are the
    other ranks of `mpiexec -n N python -m mpi4py.futures -m sysbench run ... --executor mpi`.
    Outside such a job it would try to spawn ranks; refuse with the command to use instead."""
    from .distributed.launcher import in_mpi_job

    if not in_mpi_job():
        raise SweepSetupError("--executor mpi runs inside an MPI job: mpiexec -n N python -m mpi4py.futures "
                              "-m sysbench run SUITE --executor mpi (N - 1 workers)")
    from mpi4py.futures import MPIPoolExecutor

    pool = MPIPoolExecutor()
    if (pool.num_workers or 0) < 1:
        pool.shutdown()
        raise SweepSetupError("--executor mpi: the MPI job has no worker ranks (run mpiexec -n 2 or more, "
                              "under python -m mpi4py.futures)")
    return pool


class SweepSetupError(Exception):
    """An executor that cannot be used: one line, exit 2."""
