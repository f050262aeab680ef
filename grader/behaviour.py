"""Behavioural checks: the student returns weights, not code; a trusted evaluator runs them on probe inputs
and the outputs must match a target function. Any construction that behaves correctly gets full marks.

    BehaviourCheck(kind, probe=..., evaluate="module:attr", target=f or "module:attr", within=0.01)

prepare: probe(gen, case) -> integer inputs (a truth table, bit streams; hidden ones come from the seeded
         generator), target(inputs) -> the outputs wanted; both are kept in `expected`. The student's
         function is called with the case's arguments (usually none). The reference's own weights must pass.
judge:   evaluate(weights, inputs) runs the returned weights in float64 in this process (a ValueError there
         is a malformed answer, described to the student); every output must be within `within` of its target.

Inputs of shape (R, D) with outputs (R,) are rows (truth tables: the failing row is named); inputs (S, T) with
outputs (S, T) are streams (hidden streams are named by index and step, never shown).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from grader.checks import Check, ordered_args, reply_failure
from grader.compare import Comparison
from grader.errors import ConfigError
from grader.plan import Call
from grader.wire import Other, Received


def resolve(path: str) -> Callable[..., Any]:
    mod, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"behaviour check: {path} is missing: {e}") from None


def plain(tree: Any) -> Any:
    """A reply's tree with arrays as float64 tensors (numbers and nesting kept) for the evaluator."""
    if isinstance(tree, Received):
        return torch.from_numpy(tree.array.astype(np.float64))
    if isinstance(tree, tuple):
        return tuple(plain(x) for x in tree)
    if isinstance(tree, list):
        return [plain(x) for x in tree]
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items()}
    if isinstance(tree, Other):
        return f"<{tree.type_name}>"
    return tree


def _fmt(v: float) -> str:
    return f"{v:.4g}" if np.isfinite(v) else str(v)


class BehaviourCheck(Check):
    """The returned weights, run by `evaluate` on `probe` inputs, match `target` to within `within`."""

    def __init__(
        self,
        kind: str,
        *,
        probe: Callable[[torch.Generator, Any], torch.Tensor],
        evaluate: str,
        target: str | Callable[[torch.Tensor], torch.Tensor],
        within: float,
    ):
        self.kind, self.probe, self.evaluate, self.target, self.within = kind, probe, evaluate, target, within

    def prepare(self, plan, fn, case, reference, gen):
        inputs = self.probe(gen, case)
        targets = (resolve(self.target) if isinstance(self.target, str) else self.target)(inputs)
        with torch.no_grad():
            ours = resolve(self.evaluate)(reference(*ordered_args(fn, case)), inputs)
        if not bool(((ours - targets).abs() <= self.within).all()):
            raise ConfigError(f"the reference weights of {fn.name} fail their own check {self.kind!r}")
        expected = {"inputs": inputs.numpy().copy(), "targets": targets.numpy().astype(np.float64)}
        return [Call(fn.name, ordered_args(fn, case))], expected

    def judge(self, fn, case, expected, replies):
        (reply,) = replies
        failed = reply_failure(fn, reply)
        if failed:
            return failed
        inputs = np.asarray(expected["inputs"])
        targets = np.asarray(expected["targets"], dtype=np.float64)
        try:
            with torch.no_grad():
                out = resolve(self.evaluate)(plain(reply.value), torch.from_numpy(inputs.copy()))
        except ValueError as e:
            return Comparison(False, f"{fn.name} returned weights that cannot be used: {e}")
        got = out.detach().numpy().astype(np.float64)
        err = np.where(np.isfinite(got), np.abs(got - targets), np.inf)
        bad = err > self.within
        if not bad.any():
            return Comparison(True)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        worst = float(err.max())
        n = int(bad.sum())
        if got.ndim == 1:  # rows of a truth table: not secret
            row = ", ".join(str(int(v)) for v in inputs[idx[0]])
            msg = (
                f"on input ({row}) the output is {_fmt(got[idx])}, expected {targets[idx]:g} "
                f"(within {self.within:g}); {n} of {got.size} inputs wrong"
            )
        else:
            s, t = idx
            if case.visibility == "public":
                bits = "".join(str(int(v)) for v in inputs[s, : t + 1])
                stream = f"public stream {s} (bits {bits if len(bits) <= 24 else '...' + bits[-24:]})"
            else:
                stream = f"hidden stream {s} (length {inputs.shape[1]})"
            msg = (
                f"on {stream}, the output after step {t + 1} is {_fmt(got[idx])}, expected {targets[idx]:g} "
                f"(within {self.within:g}); {n} of {got.size} outputs wrong in {int(bad.any(axis=1).sum())} "
                f"of {got.shape[0]} streams"
            )
        return Comparison(False, msg, worst, idx)
