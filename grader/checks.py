"""Check kinds: how a case becomes worker calls (trusted, with the reference) and how replies are judged.

A check has two halves that never meet in the worker:

    prepare(plan, fn, case, reference, gen) -> (calls, expected)   run once per case set, trusted
    judge(fn, case, expected, replies)      -> Comparison          pure, in the trusted process

`expected` is a tree of arrays and scalars (it is stored in the public-case files, so it must survive
grader.wire), and it never leaves the trusted process for hidden cases.

Kinds here: ForwardCheck (outputs vs the reference) and GradientCheck (autograd through the student's
forward vs the reference's, via a random projection of every output). Assignments add their own kinds
(causal masking, exact, behavioural) by subclassing Check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from grader.compare import Comparison, compare_tree
from grader.plan import Call, Case, Function, Plan, Reply

FLOAT_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


class Check:
    """Base class of check kinds. `kind` names the check in reports: "rnn_forward: forward (...)"."""

    kind = "check"
    weight = 1.0

    def prepare(
        self, plan: Plan, fn: Function, case: Case, reference: Callable[..., Any], gen: torch.Generator
    ) -> tuple[list[Call], Any]:
        raise NotImplementedError

    def judge(self, fn: Function, case: Case, expected: Any, replies: list[Reply]) -> Comparison:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------- helpers


def to_numpy(tree: Any) -> Any:
    """Tensors -> numpy arrays, recursively (detached copies)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, tuple):
        return tuple(to_numpy(x) for x in tree)
    if isinstance(tree, list):
        return [to_numpy(x) for x in tree]
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    return tree


def upcast(tree: Any) -> Any:
    """Floating tensors -> float64 clones, so the reference gives the exact answer for float32 inputs."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to(torch.float64).clone() if tree.is_floating_point() else tree.clone()
    if isinstance(tree, tuple):
        return tuple(upcast(x) for x in tree)
    if isinstance(tree, list):
        return [upcast(x) for x in tree]
    if isinstance(tree, dict):
        return {k: upcast(v) for k, v in tree.items()}
    return tree


def leaves(tree: Any) -> list[Any]:
    """The leaves of a nested tuple/list/dict, in order."""
    if isinstance(tree, (tuple, list)):
        return [leaf for x in tree for leaf in leaves(x)]
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in leaves(v)]
    return [tree]


def map_leaves(tree: Any, f: Callable[[Any], Any]) -> Any:
    if isinstance(tree, tuple):
        return tuple(map_leaves(x, f) for x in tree)
    if isinstance(tree, list):
        return [map_leaves(x, f) for x in tree]
    if isinstance(tree, dict):
        return {k: map_leaves(v, f) for k, v in tree.items()}
    return f(tree)


def ordered_args(fn: Function, case: Case) -> tuple[Any, ...]:
    return tuple(case.inputs[a] for a in fn.args)


def reply_failure(fn: Function, reply: Reply) -> Comparison | None:
    """A failed call as a Comparison (None if the call returned)."""
    if reply.failure is None:
        return None
    return Comparison(False, reply.error or reply.failure)


# ----------------------------------------------------------------------------------------------- forward


class ForwardCheck(Check):
    """The function's return value equals the reference's (shapes, dtypes, values within tolerance)."""

    kind = "forward"

    def prepare(self, plan, fn, case, reference, gen):
        args = ordered_args(fn, case)
        with torch.no_grad():
            out = reference(*upcast(args))
        return [Call(fn.name, args)], {"value": to_numpy(out)}

    def judge(self, fn, case, expected, replies):
        (reply,) = replies
        failed = reply_failure(fn, reply)
        if failed:
            return failed
        return compare_tree(
            "output",
            expected["value"],
            reply.value,
            fn.tol(case.dtype),
            dtype=case.dtype if case.dtype in FLOAT_DTYPES else None,
            reveal=case.visibility == "public",
            names=fn.outputs,
        )


# ----------------------------------------------------------------------------------------------- gradients


class GradientCheck(Check):
    """Autograd through the student's function: d<P, outputs>/d(every floating input) equals the reference's.

    Catches .detach(), .data writes, NumPy round trips and in-place ops that break the graph, which leave
    the forward values right but the gradients missing or wrong.
    """

    kind = "gradients"

    def __init__(self, wrt: tuple[str, ...] | None = None):
        self.wrt = wrt  # argument names to differentiate; default every floating tensor argument

    def prepare(self, plan, fn, case, reference, gen):
        args = ordered_args(fn, case)
        names = self.wrt or tuple(a for a, v in zip(fn.args, args, strict=True) if _has_float_tensor(v))
        idx = tuple(fn.args.index(n) for n in names)
        ref_args = list(upcast(args))
        for i in idx:
            ref_args[i] = map_leaves(ref_args[i], _requiring_grad)
        out = reference(*ref_args)
        dtype = FLOAT_DTYPES.get(case.dtype, torch.float64)

        def proj(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype)
            return None

        projection = map_leaves(out, proj)
        loss = sum(
            (o * p.to(torch.float64)).sum()
            for o, p in zip(leaves(out), leaves(projection), strict=True)
            if p is not None
        )
        inputs = [t for i in idx for t in leaves(ref_args[i]) if _is_grad_leaf(t)]
        flat = iter(torch.autograd.grad(loss, inputs, allow_unused=True))

        def regroup(t: Any) -> Any:
            if not _is_grad_leaf(t):
                return None
            g = next(flat)
            return to_numpy(g) if g is not None else np.zeros(tuple(t.shape))

        expected = {"names": list(names), "grads": [map_leaves(ref_args[i], regroup) for i in idx]}
        return [Call(fn.name, args, grad_wrt=idx, projection=projection)], expected

    def judge(self, fn, case, expected, replies):
        (reply,) = replies
        failed = reply_failure(fn, reply)
        if failed:
            return failed
        grads = reply.grads or ()
        if len(grads) != len(expected["names"]):
            return Comparison(False, "the worker returned the wrong number of gradients")
        tol = fn.tol(case.dtype)
        for name, exp, got in zip(expected["names"], expected["grads"], grads, strict=True):
            c = _compare_grads(f"d/d{name}", exp, got, tol, case)
            if not c.ok:
                return c
        return Comparison(True)


def _has_float_tensor(v: Any) -> bool:
    return any(isinstance(t, torch.Tensor) and t.is_floating_point() for t in leaves(v))


def _requiring_grad(t: Any) -> Any:
    return t.requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point() else t


def _is_grad_leaf(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and t.is_leaf


def _compare_grads(name: str, exp: Any, got: Any, tol: Any, case: Case) -> Comparison:
    """Gradient trees: None where no gradient reaches is right only where the reference's is all zero."""
    if isinstance(exp, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(exp):
            return Comparison(False, f"the worker returned gradients for {name} in the wrong structure")
        for i, (e, g) in enumerate(zip(exp, got, strict=True)):
            c = _compare_grads(f"{name}[{i}]", e, g, tol, case)
            if not c.ok:
                return c
        return Comparison(True)
    if isinstance(exp, dict):
        if not isinstance(got, dict):
            return Comparison(False, f"the worker returned gradients for {name} in the wrong structure")
        for k, e in exp.items():
            c = _compare_grads(f"{name}[{k!r}]", e, got.get(k), tol, case)
            if not c.ok:
                return c
        return Comparison(True)
    if exp is None:
        return Comparison(True)
    if got is None:
        if not np.any(np.asarray(exp)):
            return Comparison(True)  # the output does not depend on this input: no gradient is right
        return Comparison(
            False,
            f"no gradient reaches {name.removeprefix('d/d')}: the outputs do not depend on it through autograd "
            "(.detach(), .data, .item(), NumPy or a new tensor built from values breaks the graph)",
        )
    c = compare_tree(name, exp, got, tol, dtype=case.dtype, reveal=case.visibility == "public")
    if not c.ok:
        return Comparison(False, f"gradient wrong: {c.message}", c.max_abs_error, c.where)
    return Comparison(True)


DEFAULT_CHECKS: tuple[Check, ...] = (ForwardCheck(), GradientCheck())
