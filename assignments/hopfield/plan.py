"""Check plan of the `hopfield` assignment: Hebbian weights, energy, asynchronous recall — exact checks.

Hidden cases sit near capacity (N = 32, P = 6: the 0.138 N limit is about 4.4 patterns) with noisy probes and
b = 0, where fields of exactly zero are common (with P even every field is an even integer), so each classic
mistake changes the answer: a non-zero diagonal (weights), sign(0) = 0 or "keep the unit on a zero field"
(ties), synchronous updates, ignoring or reversing the update order, stopping before a quiet sweep.
Cases with a bias keep every field at least 0.25 away from zero, so float32 and float64 agree exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from grader.checks import ForwardCheck
from grader.exact import FixedPoints, NonIncreasing, OutputCheck, StableUnderSignRule
from grader.plan import Function, Plan


def pm1(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uniform ±1 entries."""
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(dtype)


def hebbian(X: torch.Tensor) -> torch.Tensor:
    W = X.T @ X
    return W - torch.diag(torch.diagonal(W))


def bias(gen: torch.Generator, N: int, on: bool, dtype: torch.dtype) -> torch.Tensor:
    """Zero, or ±U(0.25, 0.75) (never near an even integer, so no field is within 0.25 of zero)."""
    if not on:
        return torch.zeros(N, dtype=dtype)
    mag = 0.25 + 0.5 * torch.rand(N, generator=gen, dtype=torch.float64)
    return (mag * pm1(gen, (N,), torch.float64)).to(dtype)


def stable_rows(X: torch.Tensor) -> torch.Tensor:
    """Which stored patterns are fixed points of their Hebbian weights (b = 0)."""
    fields = X @ hebbian(X).T
    return (torch.where(fields > 0, 1.0, -1.0).to(X.dtype) == X).all(dim=1)


def make_hebbian(gen, p, dtype):
    return {"patterns": pm1(gen, (p["P"], p["N"]), dtype)}


def make_energy(gen, p, dtype):
    N = p["N"]
    X = pm1(gen, (p["P"], N), torch.float64)
    return {"W": hebbian(X).to(dtype), "b": bias(gen, N, p["_bias"], dtype), "s": pm1(gen, (N,), dtype)}


def variant_state(W, b, s0, order, max_sweeps, *, tie: str = "minus", sync: bool = False) -> np.ndarray:
    """The final state under the lecture's rule or a classic mistake (tie: "minus" | "zero" | "keep")."""
    s = s0.copy()
    for _ in range(max_sweeps):
        old = s.copy()
        for i in order if not sync else [None]:
            h = W @ (old if sync else s) + b
            rule = np.where(h > 0, 1.0, -1.0)
            if tie == "zero":
                rule = np.where(h == 0, 0.0, rule)
            elif tie == "keep":
                rule = np.where(h == 0, old if sync else s, rule)
            if sync:
                s = rule
            else:
                s[i] = rule[i]
        if np.array_equal(s, old):
            break
    return s


def exposes(W, b, s0, order, max_sweeps, mistakes: tuple[str, ...]) -> bool:
    """Whether every named mistake ends in a different final state than the lecture's rule."""
    W, b, s0 = W.numpy(), b.numpy(), s0.numpy()
    right = variant_state(W, b, s0, order, max_sweeps)
    other = {
        "sign0": lambda: variant_state(W, b, s0, order, max_sweeps, tie="zero"),
        "keep": lambda: variant_state(W, b, s0, order, max_sweeps, tie="keep"),
        "order": lambda: variant_state(W, b, s0, sorted(order), max_sweeps),
        "reversed": lambda: variant_state(W, b, s0, order[::-1], max_sweeps),
        "sync": lambda: variant_state(W, b, s0, order, max_sweeps, sync=True),
    }
    return all(not np.array_equal(other[m](), right) for m in mistakes)


def make_recall(gen, p, dtype):
    """Patterns with at least two stable ones (for the fixed-point check), and a probe and an order under
    which every mistake in `_expose` changes the final state (redrawn from the same generator until so)."""
    N, P = p["N"], p["P"]
    for _ in range(1000):
        X = pm1(gen, (P, N), torch.float64)
        stable = stable_rows(X)
        if int(stable.sum()) < min(2, P):
            continue
        if p["_probe"] == "random":
            s0 = pm1(gen, (N,), torch.float64)
        else:
            flips = torch.rand(N, generator=gen, dtype=torch.float64) < p["_probe"]
            s0 = torch.where(flips, -X[0], X[0])
        order = torch.randperm(N, generator=gen) if p["_order"] == "random" else torch.arange(N)
        b = bias(gen, N, p["_bias"], torch.float64)
        W = hebbian(X)
        if exposes(W, b, s0, order.tolist(), p["max_sweeps"], p["_expose"]):
            break
    else:
        raise RuntimeError(f"no case exposing {p['_expose']} in 1000 draws")
    return {
        "W": W.to(dtype),
        "b": b.to(dtype),
        "s0": s0.to(dtype),
        "order": order,
        "max_sweeps": p["max_sweeps"],
        "patterns": X[stable].to(dtype),
    }


ALL = ("sign0", "keep", "order", "reversed", "sync")
HEBBIAN_PUBLIC = ({"P": 2, "N": 6},)
HEBBIAN_HIDDEN = ({"P": 6, "N": 32}, {"P": 1, "N": 5}, {"P": 3, "N": 17})
ENERGY_PUBLIC = ({"P": 2, "N": 6, "_bias": True},)
ENERGY_HIDDEN = (
    {"P": 6, "N": 32, "_bias": False},
    {"P": 6, "N": 32, "_bias": True},
    {"P": 1, "N": 5, "_bias": True},
)
RECALL_PUBLIC = (
    {"N": 12, "P": 2, "max_sweeps": 10, "_probe": 0.25, "_bias": False, "_order": "random", "_expose": ALL},
)
RECALL_HIDDEN = (
    {"N": 32, "P": 6, "max_sweeps": 20, "_probe": 0.25, "_bias": False, "_order": "random", "_expose": ALL},
    {"N": 32, "P": 6, "max_sweeps": 20, "_probe": 0.4, "_bias": False, "_order": "random", "_expose": ALL},
    {
        "N": 32,
        "P": 6,
        "max_sweeps": 20,
        "_probe": "random",
        "_bias": False,
        "_order": "random",
        "_expose": ALL,
    },
    {
        "N": 32,
        "P": 4,
        "max_sweeps": 20,
        "_probe": 0.3,
        "_bias": True,
        "_order": "random",
        "_expose": ("order", "reversed", "sync"),
    },
    {"N": 32, "P": 6, "max_sweeps": 1, "_probe": 0.3, "_bias": False, "_order": "random", "_expose": ALL},
    {
        "N": 24,
        "P": 4,
        "max_sweeps": 20,
        "_probe": 0.3,
        "_bias": False,
        "_order": "index",
        "_expose": ("sign0", "keep", "reversed", "sync"),
    },
)

PLAN = Plan(
    name="hopfield",
    module="hopfield",
    title="Hopfield networks: Hebbian storage, energy and asynchronous recall",
    functions=(
        Function(
            name="hebbian_weights",
            points=2,
            args=("patterns",),
            make_inputs=make_hebbian,
            hidden=HEBBIAN_HIDDEN,
            public=HEBBIAN_PUBLIC,
            outputs="W",
            checks=(
                OutputCheck("weights exact"),
                StableUnderSignRule("patterns stable", patterns_arg="patterns"),
            ),
            signature="hebbian_weights(patterns) -> W",
        ),
        Function(
            name="energy",
            points=1,
            args=("W", "b", "s"),
            make_inputs=make_energy,
            hidden=ENERGY_HIDDEN,
            public=ENERGY_PUBLIC,
            outputs="E",
            checks=(ForwardCheck(),),
            signature="energy(W, b, s) -> E",
        ),
        Function(
            name="recall",
            points=4,
            args=("W", "b", "s0", "order", "max_sweeps"),
            make_inputs=make_recall,
            hidden=RECALL_HIDDEN,
            public=RECALL_PUBLIC,
            outputs=("s", "energies"),
            checks=(
                OutputCheck("final state exact", 0),
                OutputCheck("energy trace", 1, exact=False),
                NonIncreasing("energy never increases", 1),
                FixedPoints(
                    "stored patterns are fixed points", probes="patterns", state_arg="s0", zero_args=("b",)
                ),
            ),
            signature="recall(W, b, s0, order, max_sweeps) -> (s, energies)",
        ),
    ),
)
