"""Exact checks: outputs that must equal the reference bit for bit, properties of the student's own outputs,
and states that must not move. Written for the Hopfield assignment, reusable by any discrete model.

    OutputCheck(kind, select, exact=True)   selected outputs vs the reference: EXACT (states, integer weights)
                                            or the function's float tolerance (energies)
    NonIncreasing(kind, select)             the student's own trace never increases (beyond float tolerance)
    FixedPoints(kind, probes, state_arg)    recall started at a stored pattern returns it unchanged, with a
                                            constant energy trace
    StableUnderSignRule(kind, patterns_arg) the student's own weights keep every stored pattern fixed under
                                            s_i <- +1 if (W s)_i > 0 else -1

`select` picks outputs of a tuple-returning function by index (None: the whole output).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from grader.checks import FLOAT_DTYPES, Check, ordered_args, reply_failure, to_numpy, upcast
from grader.compare import EXACT, Comparison, compare_array, compare_tree, describe
from grader.errors import ConfigError
from grader.plan import Call
from grader.wire import Received


def pick(tree: Any, select: int | None) -> Any:
    """Output number `select` of a tuple/list output (the whole output if select is None)."""
    if select is None:
        return tree
    if isinstance(tree, (tuple, list)) and not isinstance(tree, Received) and len(tree) > select:
        return tree[select]
    raise IndexError(select)


def output_name(fn: Any, select: int | None) -> str:
    outs = fn.outputs
    if select is not None and isinstance(outs, (tuple, list)) and select < len(outs):
        return str(outs[select])
    return outs if isinstance(outs, str) else "output"


def _picked(fn: Any, reply: Any, select: int | None) -> tuple[Any, Comparison | None]:
    """The selected output of a reply, or a Comparison saying why there is none."""
    failed = reply_failure(fn, reply)
    if failed:
        return None, failed
    try:
        return pick(reply.value, select), None
    except IndexError:
        n = len(fn.outputs) if isinstance(fn.outputs, (tuple, list)) else 1
        return None, Comparison(False, f"{fn.name} returned {describe(reply.value)}, expected a tuple of {n}")


class OutputCheck(Check):
    """Selected outputs equal the reference's: exactly (exact=True) or within the function's tolerance."""

    def __init__(self, kind: str = "exact", select: int | None = None, *, exact: bool = True):
        self.kind, self.select, self.exact = kind, select, exact

    def prepare(self, plan, fn, case, reference, gen):
        args = ordered_args(fn, case)
        with torch.no_grad():
            out = reference(*upcast(args))
        return [Call(fn.name, args)], {"value": to_numpy(pick(out, self.select))}

    def judge(self, fn, case, expected, replies):
        got, failed = _picked(fn, replies[0], self.select)
        if failed:
            return failed
        exp = expected["value"]
        if self.exact and isinstance(exp, np.ndarray) and case.dtype in FLOAT_DTYPES:
            exp = exp.astype(case.dtype)  # exact values (±1, integer sums) are representable in every dtype
        tol = EXACT if self.exact else fn.tol(case.dtype)
        return compare_tree(
            output_name(fn, self.select),
            exp,
            got,
            tol,
            dtype=case.dtype if case.dtype in FLOAT_DTYPES else None,
            reveal=case.visibility == "public",
        )


class NonIncreasing(Check):
    """The student's own trace (a 1-D output) never increases by more than the float tolerance."""

    def __init__(self, kind: str = "never increases", select: int | None = None):
        self.kind, self.select = kind, select

    def prepare(self, plan, fn, case, reference, gen):
        return [Call(fn.name, ordered_args(fn, case))], {}

    def judge(self, fn, case, expected, replies):
        got, failed = _picked(fn, replies[0], self.select)
        if failed:
            return failed
        name = output_name(fn, self.select)
        if not isinstance(got, Received) or got.array.ndim != 1:
            return Comparison(False, f"{name} is {describe(got)}, expected a 1-D tensor")
        trace = got.array.astype(np.float64)
        if not np.isfinite(trace).all():
            return Comparison(False, f"{name} contains NaN or infinity")
        tol = fn.tol(case.dtype)
        rise = np.diff(trace)
        allowed = tol.atol + tol.rtol * np.abs(trace[:-1])
        bad = np.flatnonzero(rise > allowed)
        if bad.size:
            i = int(bad[0])
            return Comparison(
                False,
                f"{name} increases at update {i + 1}: {trace[i]:.6g} -> {trace[i + 1]:.6g} "
                f"({bad.size} increases in {trace.size} updates); asynchronous updates "
                "with a zero diagonal never raise the energy",
                float(rise[i]),
                (i + 1,),
            )
        return Comparison(True)


class FixedPoints(Check):
    """Each probe (a row of case input `probes`) is a fixed point: the function returns it unchanged.

    Calls fn with `state_arg` replaced by each probe and every argument in `zero_args` replaced by zeros;
    the state output (`select`) must equal the probe exactly and the trace output (`trace`) must stay at
    the reference's constant value. The reference must agree that every probe is fixed (else: plan bug).
    """

    def __init__(
        self,
        kind: str = "fixed points",
        *,
        probes: str,
        state_arg: str,
        zero_args: tuple[str, ...] = (),
        select: int = 0,
        trace: int | None = 1,
    ):
        self.kind, self.probes, self.state_arg, self.zero_args = kind, probes, state_arg, zero_args
        self.select, self.trace = select, trace

    def prepare(self, plan, fn, case, reference, gen):
        calls, traces = [], []
        for k, probe in enumerate(case.inputs[self.probes]):
            inputs = dict(case.inputs)
            inputs[self.state_arg] = probe.clone()
            for a in self.zero_args:
                inputs[a] = torch.zeros_like(inputs[a])
            args = ordered_args(fn, Case_(inputs))
            with torch.no_grad():
                out = reference(*upcast(args))
            if not torch.equal(pick(out, self.select), upcast(probe)):
                raise ConfigError(f"probe {k} of {fn.name} is not a fixed point of the reference")
            calls.append(Call(fn.name, args))
            traces.append(to_numpy(pick(out, self.trace)) if self.trace is not None else None)
        return calls, {"probes": to_numpy(case.inputs[self.probes]), "traces": traces}

    def judge(self, fn, case, expected, replies):
        state_name = output_name(fn, self.select)
        for k, (probe, trace, reply) in enumerate(
            zip(expected["probes"], expected["traces"], replies, strict=True)
        ):
            got, failed = _picked(fn, reply, self.select)
            if failed:
                return failed
            c = compare_array(
                state_name,
                probe.astype(case.dtype),
                got,
                EXACT,
                dtype=case.dtype,
                reveal=case.visibility == "public",
            )
            if not c.ok:
                return Comparison(
                    False, f"stored pattern {k} is not a fixed point: {c.message}", c.max_abs_error, c.where
                )
            if self.trace is not None:
                got_trace, failed = _picked(fn, reply, self.trace)
                c = compare_tree(
                    output_name(fn, self.trace),
                    trace,
                    got_trace,
                    fn.tol(case.dtype),
                    dtype=case.dtype,
                    reveal=case.visibility == "public",
                )
                if not c.ok:
                    return Comparison(
                        False, f"recall from stored pattern {k}: {c.message}", c.max_abs_error, c.where
                    )
        return Comparison(True)


class StableUnderSignRule(Check):
    """The returned weights keep every row of input `patterns_arg` fixed under the sign rule."""

    def __init__(self, kind: str = "patterns stable", *, patterns_arg: str):
        self.kind, self.patterns_arg = kind, patterns_arg

    def prepare(self, plan, fn, case, reference, gen):
        patterns = case.inputs[self.patterns_arg]
        W = reference(upcast(patterns))
        fields = upcast(patterns) @ W.T  # (P, N)
        stable = torch.all(torch.where(fields > 0, 1.0, -1.0).to(W.dtype) == upcast(patterns), dim=1)
        return [Call(fn.name, ordered_args(fn, case))], {
            "patterns": to_numpy(patterns),
            "stable": to_numpy(stable),
        }

    def judge(self, fn, case, expected, replies):
        got, failed = _picked(fn, replies[0], None)
        if failed:
            return failed
        X = expected["patterns"].astype(np.float64)
        N = X.shape[1]
        if not isinstance(got, Received) or tuple(got.array.shape) != (N, N):
            return Comparison(
                False, f"{output_name(fn, None)} is {describe(got)}, expected a tensor of shape {(N, N)}"
            )
        W = got.array.astype(np.float64)
        if not np.isfinite(W).all():
            return Comparison(False, f"{output_name(fn, None)} contains NaN or infinity")
        moved = np.where(X @ W.T > 0, 1.0, -1.0) != X  # (P, N)
        for k in np.flatnonzero(np.asarray(expected["stable"])):
            if moved[k].any():
                return Comparison(
                    False,
                    f"stored pattern {int(k)} is not a fixed point of the returned weights: "
                    f"one update flips {int(moved[k].sum())} of {N} units",
                )
        return Comparison(True)


class Case_:
    """A stand-in Case holding only inputs, for ordered_args on modified inputs."""

    def __init__(self, inputs: dict[str, Any]):
        self.inputs = inputs
