"""Shared test helpers: drive a workload through the protocol by hand, write suites, and
restore every kernel's SIMD path after a test that forces one."""
from __future__ import annotations

import importlib
import textwrap

import numpy as np
from threadpoolctl import threadpool_limits
import pytest
import tomli_w

from sysbench.hardware import Array
from sysbench.workloads.base import Params, Run


def as_params(workload, params, array: Array = Array()) -> Params:
    """A kind's Params from a dict of its keys (missing keys get their defaults), normalized."""
    if isinstance(params, Params):
        return params
    values = {name: key.default for name, key in workload.keys.items() if not key.required}
    values.update(params)
    return workload.normalize(workload.make_params(values), array)


def check_of(workload, params, array: Array = Array()):
    return workload.check(as_params(workload, params, array), array)


def model_of(workload, params, array: Array = Array()) -> dict:
    p = as_params(workload, params, array)
    return workload.model(p, array, workload.plan(p, array))


def drive(workload, params, array: Array = Array(), seed: int = 0, threads: int = 1):
    """(run, output): plan, inputs and one call of the timed function, as the runner does
    (numpy's BLAS held to `threads`)."""
    p = as_params(workload, params, array)
    plan = workload.plan(p, array)
    inputs = workload.inputs(p, array, plan, np.random.default_rng(seed))
    run = Run(p, array, plan, inputs, threads, 0, 1)
    timed = workload.timed(run)
    if timed.reset is not None:
        timed.reset()
    with threadpool_limits(limits=threads, user_api="blas"):
        output = timed.call()
    return run, getattr(output, "output", output)


def suite_toml(*cases: dict, **tables) -> str:
    """A suite file's text from its [[cases]] tables and top-level values ("arrays", "defaults"...)."""
    return tomli_w.dumps({**tables, "cases": list(cases)})


@pytest.fixture
def write_suite(tmp_path):
    """write_suite(text, name="suite.toml") -> the path of a suite file holding `text`."""
    def write(text: str, name: str = "suite.toml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture
def restore_isa():
    """Puts every multi-path kernel back on its widest SIMD path after the test."""
    yield
    for name in ("systolic", "sparse", "sample"):
        module = importlib.import_module(f"sysbench._kernels.{name}")
        module.set_isa(None)
