"""Choosing one option per unit under hard budgets: a multiple-choice knapsack as an ILP.

maximize    sum u[k, o] x[k, o]
subject to  sum_o x[k, o] = 1                                   for every unit k
            sum cost_r[k, o] x[k, o] <= budget_r - fixed_r      for each additive resource r
            y_b >= bytes_b(o) x[k, o] summed over o             for each buffer b, reader unit k
            y_b >= float_bytes_b                                 if b is also read in float
            sum_{b live at t} y_b <= SRAM                        for each distinct live set t
Additive resources: BOPs, weight bytes (flash), latency. Peak activation memory is a max over
the schedule, so it gets one constraint per live set, with y_b the storage of buffer b.
Pairwise terms (interactions of two units' options) add v[k, o, l, p] z to the objective, the
product z = x[k, o] x[l, p] linearized: z <= x[k, o], z <= x[l, p], z >= x[k, o] + x[l, p] - 1.
Solved by scipy's HiGHS (``scipy.optimize.milp``). ``best_k`` solves again with no-good cuts
to list the next-best distinct choices.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class MemoryModel:
    """Peak-activation constraints: buffers, who sets their width, and the live sets."""

    buffer_bytes: list[dict[int, np.ndarray]]
    """Per buffer: reader unit -> bytes of the buffer for each of that unit's options."""
    float_bytes: np.ndarray
    """Per buffer: bytes when read in float (0 when it is not)."""
    live_sets: np.ndarray
    """Boolean (distinct live sets x buffers)."""
    limit: float


@dataclass(frozen=True)
class KnapsackProblem:
    utilities: list[np.ndarray]
    """Per unit, the utility of each option."""
    costs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """Per additive resource, per unit, the cost of each option."""
    budgets: dict[str, float] = field(default_factory=dict)
    """Per additive resource, the budget left once fixed costs are taken off."""
    memory: MemoryModel | None = None
    pairs: dict[tuple[int, int, int, int], float] = field(default_factory=dict)
    """(unit k, option o, unit l, option p) -> utility added when both are chosen (k != l)."""

    def objective(self, choice: Sequence[int]) -> float:
        """The utility of ``choice``, pairwise terms included."""
        total = sum(float(self.utilities[k][o]) for k, o in enumerate(choice))
        return total + sum(value for (k, o, m, p), value in self.pairs.items()
                           if choice[k] == o and choice[m] == p)


class Infeasible(Exception):
    """No choice meets every budget."""


def solve(problem: KnapsackProblem, *, exclude: Sequence[Sequence[int]] = ()) -> list[int]:
    """The best option index per unit; ``exclude`` lists choices that may not be returned.

    The solver works to a feasibility tolerance; a choice that overshoots a budget by a hair
    is solved again with that budget tightened, so the result meets every budget exactly.
    """
    current = problem
    for attempt in range(5):
        choice = _solve_once(current, exclude)
        over = _overshoot(problem, choice)
        if not over:
            return choice
        margin = 1e-7 * 10**attempt
        budgets = dict(current.budgets)
        for resource, amount in over.items():
            if resource in budgets:
                budgets[resource] -= amount + margin * max(abs(problem.budgets[resource]), 1.0)
        memory = current.memory
        if memory is not None and "sram" in over:
            memory = MemoryModel(memory.buffer_bytes, memory.float_bytes, memory.live_sets,
                                 memory.limit - over["sram"] - margin * max(memory.limit, 1.0))
        current = KnapsackProblem(current.utilities, current.costs, budgets, memory,
                                  current.pairs)
    raise Infeasible("the solver's choices keep overshooting a budget")


def _overshoot(problem: KnapsackProblem, choice: list[int]) -> dict[str, float]:
    """Exact budget violations of ``choice`` (resource -> amount over)."""
    over = {}
    for resource, budget in problem.budgets.items():
        used = sum(float(problem.costs[resource][k][o]) for k, o in enumerate(choice))
        if used > budget:
            over[resource] = used - budget
    memory = problem.memory
    if memory is not None:
        widths = memory.float_bytes.astype(float).copy()
        for b, readers in enumerate(memory.buffer_bytes):
            for unit, sizes in readers.items():
                widths[b] = max(widths[b], float(sizes[choice[unit]]))
        peak = float((memory.live_sets.astype(float) @ widths).max(initial=0.0))
        if peak > memory.limit:
            over["sram"] = peak - memory.limit
    return over


def _solve_once(problem: KnapsackProblem, exclude: Sequence[Sequence[int]]) -> list[int]:
    offsets = np.cumsum([0] + [len(u) for u in problem.utilities])
    n_x = int(offsets[-1])
    memory = problem.memory
    n_y = len(memory.float_bytes) if memory is not None else 0
    pairs = [(k, o, m, p, value) for (k, o, m, p), value in problem.pairs.items() if value]
    if any(k == m for k, _, m, _, _ in pairs):
        raise ValueError("a pairwise term joins two different units")
    n = n_x + n_y + len(pairs)
    objective = np.zeros(n)
    objective[:n_x] = -np.concatenate(problem.utilities)  # milp minimizes
    objective[n_x + n_y:] = [-value for *_, value in pairs]
    rows, lower, upper = [], [], []

    def add(row: np.ndarray, lo: float, hi: float) -> None:
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    for k in range(len(problem.utilities)):
        row = np.zeros(n)
        row[offsets[k]:offsets[k + 1]] = 1
        add(row, 1, 1)
    for resource, budget in problem.budgets.items():
        row = np.zeros(n)
        row[:n_x] = np.concatenate(problem.costs[resource])
        add(row, -np.inf, budget)
    if memory is not None:
        for b, readers in enumerate(memory.buffer_bytes):
            for unit, sizes in readers.items():
                row = np.zeros(n)
                row[offsets[unit]:offsets[unit + 1]] = sizes
                row[n_x + b] = -1
                add(row, -np.inf, 0)
        for live in memory.live_sets:
            row = np.zeros(n)
            row[n_x:] = live.astype(float)
            add(row, -np.inf, memory.limit)
    for j, (k, o, m, p, _) in enumerate(pairs):  # z_j = x[k, o] * x[m, p]
        z = n_x + n_y + j
        for unit, option in ((k, o), (m, p)):
            row = np.zeros(n)
            row[z], row[offsets[unit] + option] = 1, -1
            add(row, -np.inf, 0)
        row = np.zeros(n)
        row[z], row[offsets[k] + o], row[offsets[m] + p] = 1, -1, -1
        add(row, -1, np.inf)
    for choice in exclude:
        row = np.zeros(n)
        for unit, option in enumerate(choice):
            row[offsets[unit] + option] = 1
        add(row, -np.inf, len(choice) - 1)

    lower_bounds = np.zeros(n)
    upper_bounds = np.ones(n)
    integrality = np.ones(n)
    if memory is not None:
        lower_bounds[n_x:n_x + n_y] = memory.float_bytes
        upper_bounds[n_x:n_x + n_y] = np.inf
        integrality[n_x:n_x + n_y] = 0
    integrality[n_x + n_y:] = 0  # exact products of binaries: no need to branch on them
    with native_stdout_silenced():
        result = milp(objective, constraints=LinearConstraint(np.array(rows), lower, upper),
                      integrality=integrality, bounds=Bounds(lower_bounds, upper_bounds),
                      options={"presolve": True})
    if result.status != 0 or result.x is None:
        raise Infeasible(result.message)
    x = result.x[:n_x]
    return [int(np.argmax(x[offsets[k]:offsets[k + 1]])) for k in range(len(problem.utilities))]


def best_k(problem: KnapsackProblem, k: int) -> list[list[int]]:
    """Up to ``k`` distinct choices, best first."""
    found: list[list[int]] = []
    for _ in range(k):
        try:
            found.append(solve(problem, exclude=found))
        except Infeasible:
            if not found:
                raise
            break
    return found


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 on the null device for the block, C buffers flushed on both sides.

    HiGHS's MIP solver prints ``HighsMipSolverData::transformNewIntegerFeasibleSolution``
    from C++ whatever its output options (HiGHS.jl issues 312 and 318), into the middle of
    the tool's own output. Where descriptor 1 cannot be duplicated (no such descriptor), the
    block runs as it is."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        _flush_c_streams()
        os.dup2(null, 1)
        yield
    finally:
        _flush_c_streams()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _flush_c_streams() -> None:
    """``fflush(NULL)``: C stdio buffers written out to the descriptor they belong to now."""
    if _C_LIBRARY is not None:  # None: no C library to load (Windows)
        with suppress(AttributeError, TypeError):
            _C_LIBRARY.fflush(None)


_C_LIBRARY = ctypes.CDLL(None) if os.name == "posix" else None
