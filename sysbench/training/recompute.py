"""Recompute schedules: which activations a training step keeps, and when it runs forward again.

This module is the front door; the work is split by job:
    schedules    the grammar of a `schedule` key (Schedule, parse_schedule)
    chain        the chain cost model (Chain, chain_of) and simulate(), a program's memory
    solvers      the programs: store_all, checkpoint_every, full_recompute, and the dynamic
                 programs under a memory budget (minimum_budget, optimal, optimal_persistent)
    interpreter  run_program / dry_run / train_step: one real step following a program

The chain. Positions are stages (chain.stages_of: a layer whose backward reads its input,
the layers after it that read nothing, and a ReLU tail, whose backward reads its output's
sign): a Linear + ReLU block is one position. Activations a_0 (the step's input) .. a_n;
stage k (1-based here) computes a_k from a_{k-1}. The loss is step N = n + 1: it reads a_n
and produces the gradient d_n. Backward step B(k) reads a_{k-1} and d_k and produces d_{k-1}
(and runs stage k-1's ReLU tail, which reads a_{k-1} too, in place on it). A schedule is a
program of three operations:

    F(k)  forward stage k from a_{k-1}; hold a_k
    D(k)  discard a_k
    B(k)  backward of stage k (B(N) is the loss); d_k is freed, d_{k-1} is held
          (d_0, the input's gradient, is never computed)

Every schedule runs B(N), B(n), ..., B(1) once each, in that order, on the same values: the
loss, the weight gradients and the updated weights are bit-identical across schedules. Only
the F operations (how often a layer's forward runs) and what is held differ.

Memory (the MemoryTracker's "activation memory"): held activations + live gradients.
F(k) needs held + its stage's forward peak (|a_k| for a Linear + ReLU) + |d_live|; B(k)
needs held + its backward peak (|d_k| + |d_{k-1}|). A layer's
workspace (im2col columns, masks) is CPU scratch that an accelerator streams: simulate()
reports the peak with it too, but budgets limit activation memory.

Schedules:
    store_all            keep every stage output (one forward per layer)
    full_recompute       keep only a_0 (and a_n until the loss); before each B(k) recompute
                         a_{k-1} from a_0: n(n-1)/2 extra stage forwards
    checkpoint_every=k   keep a_0, a_k, a_2k, ...; each segment is recomputed once, holding
                         its activations, then run backward
    budget=SIZE          the least recompute (in FLOPs) under a peak activation memory of SIZE
                         bytes ("64MiB"; "1/4" = a fraction of store_all's peak; "min" =
                         the least memory any schedule needs): dynamic programming over
                         (checkpoint, gradient position, memory) as Griewank's revolve and
                         Beaumont et al.'s rotor (2019), with each stage's own sizes and
                         costs, extended past persistent checkpoints (see optimal(); chains
                         longer than EXACT_MAX_LAYERS stages use the persistent DP).
"""
from __future__ import annotations

from fractions import Fraction  # noqa: F401  (budget fractions; re-exported for callers)

from .buffers import BufferPool  # noqa: F401
from .chain import Chain, backward_layers, chain_of, simulate, stages_of  # noqa: F401
from .interpreter import StepResult, dry_run, run_program, train_step  # noqa: F401
from .memory import MemoryTracker  # noqa: F401
from .schedules import SCHEDULE_FORMS, Schedule, parse_schedule  # noqa: F401
from .solvers import (EXACT_MAX_LAYERS, InfeasibleBudget, best_under_budget, budget_bytes,  # noqa: F401
                      budget_solver, checkpoint_every, format_bytes, full_recompute, minimum_budget, optimal,
                      optimal_persistent, program_for, store_all, store_all_peak)
