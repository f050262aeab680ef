"""Check kinds that prove a function is causal: no output at position t depends on an input at a position > t.

Reusable by any assignment: a check is told which arguments carry the time axis (and on which dim) and which
outputs to watch (a path into the return value and its time dim), so the same kinds serve attention,
transformer blocks, whole language models and recurrent networks alike.

    FuturePerturbationCheck   change the inputs at one position s, one call per s: outputs at t < s must not
                              move, and those at t >= s that move in the reference must move (not over-masked)
    FutureGradientCheck       project the outputs at one position t, one call per t: the gradient w.r.t. the
                              inputs at positions > t must be zero
    AttentionWeightsCheck     returned attention weights: zero above the diagonal, rows summing to 1, and
                              non-zero on and below it (position t attends to itself and to its past)
    CausalMaskCheck           a returned boolean mask, True = may attend: lower-triangular with the diagonal

Every failure names the positions: "perturbing x at t=5 moves y at t=2 (by 3.1e-01): it sees the future".
Like all checks, `prepare` runs in the trusted process (with the reference) and `judge` is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from grader.checks import FLOAT_DTYPES, Check, leaves, map_leaves, ordered_args, reply_failure, upcast
from grader.compare import Comparison, Tolerance, describe
from grader.plan import Call, Case, Function, Plan, Reply
from grader.wire import Received

Path = tuple[Any, ...]  # indices / keys into a function's return value; () is the whole value

# How far a "causal" output may move when only the future changes, relative to the output's size: rounding
# only (a correct implementation moves by 0 or by a few ulps, e.g. when it renormalises after masking).
LEAK_TOLERANCE: dict[str, Tolerance] = {
    "float64": Tolerance(atol=1e-12, rtol=1e-10),
    "float32": Tolerance(atol=1e-6, rtol=1e-5),
    "float16": Tolerance(atol=1e-3, rtol=1e-2),
}
# A reference output "depends" on an input when it moves by more than this (relative to its size).
DEPENDS = 1e-6


@dataclass(frozen=True)
class Timed:
    """Where a time axis is: `at` names an argument (inputs) or is a path into the return value (outputs)."""

    at: Any
    dim: int


def timed(spec: Any) -> tuple[Timed, ...]:
    """Accept Timed objects or (at, dim) pairs."""
    return tuple(s if isinstance(s, Timed) else Timed(s[0], int(s[1])) for s in spec)


def pick(tree: Any, path: Path) -> Any:
    """The node of a return value at `path` (None if the structure does not have it)."""
    for key in path:
        if isinstance(tree, (tuple, list)) and isinstance(key, int) and -len(tree) <= key < len(tree):
            tree = tree[key]
        elif isinstance(tree, dict) and key in tree:
            tree = tree[key]
        else:
            return None
    return tree


def output_name(fn: Function, path: Path) -> str:
    """The name of the output at `path`, from fn.outputs ("y", "weights", ...), else 'output[0]'."""
    names = pick(fn.outputs, path)
    if isinstance(names, str):
        return names
    return "output" + "".join(f"[{k!r}]" for k in path)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _array(fn: Function, value: Any, path: Path, dim: int, T: int) -> tuple[np.ndarray | None, str]:
    """The output at `path` as float64 with its time axis first, or an error message."""
    name = output_name(fn, path)
    got = pick(value, path)
    if not isinstance(got, Received):
        return None, f"{name} is {describe(got)}, expected a tensor"
    arr = got.array
    if arr.ndim == 0 or not -arr.ndim <= dim < arr.ndim or arr.shape[dim] != T:
        return (
            None,
            f"{name} has shape {tuple(arr.shape)}: expected its axis {dim} (time) to have length {T}",
        )
    return np.moveaxis(arr.astype(np.float64), dim, 0), ""


def _time_length(fn: Function, args: tuple[Any, ...], inputs: tuple[Timed, ...]) -> int:
    lengths = {int(args[fn.args.index(i.at)].shape[i.dim]) for i in inputs}
    if len(lengths) != 1:
        raise ValueError(
            f"the inputs {[i.at for i in inputs]} disagree on the number of positions: {lengths}"
        )
    return lengths.pop()


def _apply(fn: Function, case: Case, adapt: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None) -> tuple:
    inputs = dict(case.inputs)
    if adapt is not None:
        inputs.update(adapt(inputs))
    return tuple(inputs[a] for a in fn.args)


def _tol(case: Case) -> Tolerance:
    return LEAK_TOLERANCE.get(case.dtype, LEAK_TOLERANCE["float32"])


# ----------------------------------------------------------------------------------------------- perturbation


class FuturePerturbationCheck(Check):
    """Change the inputs at position s (every s in turn): outputs at positions t < s must stay put.

    `inputs`: (argument name, time dim) pairs, changed together at the same position (e.g. q, k and v).
    `outputs`: (path into the return value, time dim) pairs to watch; () is the whole value.
    `adapt(inputs) -> changed inputs` rewrites the case first (e.g. to pass a causal mask).
    Float inputs get Gaussian noise as large as the input's RMS; integer inputs (token ids) are replaced by
    other ids in [0, n_ids(inputs)) (default: up to the largest id seen).
    Also fails "over-masked" functions: an output at t >= s that moves in the reference must move.
    """

    kind = "causal: changing the future"

    def __init__(
        self,
        inputs: Any = (("x", 1),),
        outputs: Any = (((), 1),),
        *,
        adapt: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        n_ids: Callable[[Mapping[str, Any]], int] | None = None,
    ):
        self.inputs = timed(inputs)
        self.outputs = timed(outputs)
        self.adapt = adapt
        self.n_ids = n_ids

    def perturb(
        self, x: torch.Tensor, dim: int, s: int, gen: torch.Generator, n_ids: int | None
    ) -> torch.Tensor:
        x = x.clone()
        part = x.select(dim, s)
        if x.is_floating_point():
            rms = float(x.double().pow(2).mean().sqrt()) or 1.0
            part += (torch.randn(part.shape, generator=gen, dtype=torch.float64) * rms).to(x.dtype)
        else:
            high = n_ids or int(x.max()) + 1
            shift = torch.randint(1, max(high, 2), part.shape, generator=gen)
            part.copy_((part + shift) % max(high, 2))
        return x

    def prepare(
        self, plan: Plan, fn: Function, case: Case, reference: Callable[..., Any], gen: torch.Generator
    ):
        args = _apply(fn, case, self.adapt)
        T = _time_length(fn, args, self.inputs)
        n_ids = self.n_ids(dict(zip(fn.args, args, strict=True))) if self.n_ids else None
        calls = [Call(fn.name, args)]
        with torch.no_grad():
            base = reference(*upcast(args))
        depends = np.zeros((len(self.outputs), T, T), dtype=bool)  # [output, t, s]
        for s in range(T):
            new = list(args)
            for i in self.inputs:
                k = fn.args.index(i.at)
                new[k] = self.perturb(new[k], i.dim, s, gen, n_ids)
            calls.append(Call(fn.name, tuple(new)))
            with torch.no_grad():
                out = reference(*upcast(tuple(new)))
            for o, spec in enumerate(self.outputs):
                a = pick(base, spec.at).double().movedim(spec.dim, 0).reshape(T, -1)
                b = pick(out, spec.at).double().movedim(spec.dim, 0).reshape(T, -1)
                change = (a - b).abs().amax(dim=1)  # (T,)
                depends[o, :, s] = (change > DEPENDS * (1.0 + float(a.abs().max()))).numpy()
        if not depends.any(axis=(0, 1)).all():
            s = int(np.argmin(depends.any(axis=(0, 1))))
            raise ValueError(
                f"changing the inputs at t={s} does not change the reference's outputs: vacuous check"
            )
        return calls, {"T": T, "depends": depends}

    def judge(self, fn: Function, case: Case, expected: Any, replies: list[Reply]) -> Comparison:
        for r in replies:
            failed = reply_failure(fn, r)
            if failed:
                return failed
        T = int(expected["T"])
        depends = np.asarray(expected["depends"])
        tol = _tol(case)
        what = _and([str(i.at) for i in self.inputs])
        leaks: list[tuple[int, int, float, str]] = []
        blind: list[tuple[int, int, str]] = []
        for o, spec in enumerate(self.outputs):
            name = output_name(fn, spec.at)
            base, msg = _array(fn, replies[0].value, spec.at, spec.dim, T)
            if base is None:
                return Comparison(False, msg)
            base = base.reshape(T, -1)
            bad = ~np.isfinite(base).all(axis=1)
            if bad.any():
                t = int(np.argmax(bad))
                return Comparison(
                    False,
                    f"{name} is not finite (NaN or inf) at t={t}, so causality cannot be "
                    "checked: does every position have something to attend to?",
                )
            allowed = tol.atol + tol.rtol * float(np.abs(base).max(initial=0.0))
            for s in range(T):
                got, msg = _array(fn, replies[1 + s].value, spec.at, spec.dim, T)
                if got is None:
                    return Comparison(False, msg)
                with np.errstate(invalid="ignore"):
                    change = np.abs(got.reshape(T, -1) - base).max(axis=1)  # (T,)
                change = np.where(np.isnan(change), np.inf, change)
                for t in range(T):
                    if t < s and change[t] > allowed:
                        leaks.append((t, s, float(change[t]), name))
                    elif t >= s and depends[o, t, s] and change[t] <= allowed:
                        blind.append((t, s, name))
        if leaks:
            leaks.sort(key=lambda x: (x[0], x[1]))
            t, s, by, name = leaks[0]
            pairs = sorted({(lt, ls) for lt, ls, _, _ in leaks})
            more = ", ".join(f"t={lt}<-t={ls}" for lt, ls in pairs if (lt, ls) != (t, s))
            n_pairs = len(pairs)
            return Comparison(
                False,
                f"perturbing {what} at t={s} moves {name} at t={t} (by {by:.2g}): position {t} sees the "
                f"future; {n_pairs} of {T * (T - 1) // 2} (earlier, later) pairs leak"
                + (f" (also {more[:80]}{'...' if len(more) > 80 else ''})" if more else ""),
                by,
                (t, s),
            )
        if blind:
            blind.sort(key=lambda x: (x[0] - x[1], x[0]))
            t, s, name = blind[0]
            who = "itself" if t == s else f"the earlier position t={s}"
            return Comparison(
                False,
                f"perturbing {what} at t={s} does not move {name} at t={t}, but it must: position {t} "
                f"should see {who} (over-masked)",
                None,
                (t, s),
            )
        return Comparison(True)


# ----------------------------------------------------------------------------------------------- gradients


class FutureGradientCheck(Check):
    """The gradient of the outputs at position t w.r.t. the inputs at positions > t is zero (every t < T-1).

    One call per t, with a random projection that is non-zero only at output position t (the worker
    differentiates L = <P, outputs>); `inputs` must be floating arguments; the rest as the perturbation check.
    Also fails when the gradient w.r.t. an earlier input is zero where the reference's is not (over-masked).
    """

    kind = "causal: gradient from the future"

    def __init__(
        self,
        inputs: Any = (("x", 1),),
        outputs: Any = (((), 1),),
        *,
        adapt: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ):
        self.inputs = timed(inputs)
        self.outputs = timed(outputs)
        self.adapt = adapt

    def prepare(
        self, plan: Plan, fn: Function, case: Case, reference: Callable[..., Any], gen: torch.Generator
    ):
        args = _apply(fn, case, self.adapt)
        T = _time_length(fn, args, self.inputs)
        idx = tuple(fn.args.index(i.at) for i in self.inputs)
        dtype = FLOAT_DTYPES.get(case.dtype, torch.float64)
        ref_args = list(upcast(args))
        for k in idx:
            ref_args[k] = ref_args[k].requires_grad_(True)
        out = reference(*ref_args)
        watched = {tuple(o.at): o.dim for o in self.outputs}
        calls, depends = [], np.zeros((len(idx), T, T), dtype=bool)  # [input, t, s]
        for t in range(T - 1):
            projection = _map_paths(
                out, lambda path, node, t=t: _one_position(node, watched.get(path), t, gen)
            )
            loss = sum(
                (o * p).sum() for o, p in zip(leaves(out), leaves(projection), strict=True) if p is not None
            )
            grads = torch.autograd.grad(
                loss, [ref_args[k] for k in idx], retain_graph=True, allow_unused=True
            )
            for j, (g, spec) in enumerate(zip(grads, self.inputs, strict=True)):
                if g is not None:
                    g = g.movedim(spec.dim, 0).reshape(T, -1).abs().amax(dim=1)
                    depends[j, t] = (g > DEPENDS * (1.0 + float(g.max()))).numpy()
            calls.append(Call(fn.name, args, grad_wrt=idx, projection=map_leaves(projection, _cast(dtype))))
        return calls, {"T": T, "depends": depends}

    def judge(self, fn: Function, case: Case, expected: Any, replies: list[Reply]) -> Comparison:
        T = int(expected["T"])
        depends = np.asarray(expected["depends"])
        tol = _tol(case)
        outs = _and([output_name(fn, o.at) for o in self.outputs])
        blind = None
        for t, reply in enumerate(replies):
            failed = reply_failure(fn, reply)
            if failed:
                return failed
            grads = reply.grads or ()
            if len(grads) != len(self.inputs):
                return Comparison(False, "the worker returned the wrong number of gradients")
            for j, (g, spec) in enumerate(zip(grads, self.inputs, strict=True)):
                if g is None:
                    if depends[j, t].any():
                        return Comparison(
                            False,
                            f"no gradient reaches {spec.at} from {outs}: the outputs do not "
                            "depend on it through autograd",
                        )
                    continue
                if not isinstance(g, Received) or g.array.ndim == 0 or g.array.shape[spec.dim] != T:
                    return Comparison(False, f"the gradient with respect to {spec.at} has the wrong shape")
                a = np.abs(np.moveaxis(g.array.astype(np.float64), spec.dim, 0).reshape(T, -1)).max(axis=1)
                if not np.isfinite(a).all():
                    s = int(np.argmin(np.isfinite(a)))
                    return Comparison(
                        False,
                        f"the gradient of {outs} at t={t} with respect to {spec.at} is not finite (NaN or "
                        f"inf) at t={s}: does every position have something to attend to?",
                        None,
                        (t, s),
                    )
                allowed = tol.atol + tol.rtol * float(a[np.isfinite(a)].max(initial=0.0))
                future = [s for s in range(t + 1, T) if a[s] > allowed]
                if future:
                    s = future[0]
                    return Comparison(
                        False,
                        f"the gradient of {outs} at t={t} with respect to {spec.at} at t={s} is {a[s]:.2g}, "
                        f"must be 0: position {t} sees the future"
                        + (f" (also t={', t='.join(map(str, future[1:4]))})" if len(future) > 1 else ""),
                        float(a[s]),
                        (t, s),
                    )
                for s in range(t + 1):
                    if blind is None and depends[j, t, s] and a[s] <= allowed:
                        blind = (t, s, str(spec.at))
        if blind:
            t, s, name = blind
            who = "itself" if t == s else f"the earlier position t={s}"
            return Comparison(
                False,
                f"the gradient of {outs} at t={t} with respect to {name} at t={s} is 0, but position {t} "
                f"should see {who} (over-masked)",
                None,
                (t, s),
            )
        return Comparison(True)


def _one_position(node: Any, dim: int | None, t: int, gen: torch.Generator) -> torch.Tensor | None:
    """A float64 projection for a watched float output: Gaussian at position t along `dim`, zero elsewhere."""
    if dim is None or not isinstance(node, torch.Tensor) or not node.is_floating_point():
        return None
    p = torch.zeros(node.shape, dtype=torch.float64)
    p.select(dim, t).copy_(torch.randn(p.select(dim, t).shape, generator=gen, dtype=torch.float64))
    return p


def _cast(dtype: torch.dtype) -> Callable[[Any], Any]:
    return lambda p: p.to(dtype) if isinstance(p, torch.Tensor) else p


def _map_paths(tree: Any, f: Callable[[Path, Any], Any], path: Path = ()) -> Any:
    if isinstance(tree, tuple):
        return tuple(_map_paths(x, f, (*path, i)) for i, x in enumerate(tree))
    if isinstance(tree, list):
        return [_map_paths(x, f, (*path, i)) for i, x in enumerate(tree)]
    if isinstance(tree, dict):
        return {k: _map_paths(v, f, (*path, k)) for k, v in tree.items()}
    return f(path, tree)


# ----------------------------------------------------------------------------------------------- attention


class AttentionWeightsCheck(Check):
    """Returned attention weights (..., T, T) of a causal function: for every query t,

    weights[..., t, s] = 0 for s > t (no future), > 0 for s <= t (itself and the past: not over-masked),
    and sum_s weights[..., t, s] = 1 (a softmax over the keys, renormalised after any masking).
    `output` is the path of the weights in the return value; `adapt` as FuturePerturbationCheck.
    """

    kind = "causal: attention weights"

    def __init__(
        self, output: Path = (1,), *, adapt: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    ):
        self.output = tuple(output)
        self.adapt = adapt

    def prepare(
        self, plan: Plan, fn: Function, case: Case, reference: Callable[..., Any], gen: torch.Generator
    ):
        args = _apply(fn, case, self.adapt)
        with torch.no_grad():
            w = pick(reference(*upcast(args)), self.output)
        T = int(w.shape[-1])
        if tuple(w.shape[-2:]) != (T, T):
            raise ValueError(
                f"the reference's attention weights have shape {tuple(w.shape)}, not (..., T, T)"
            )
        allowed = torch.ones(T, T, dtype=torch.bool).tril()
        return [Call(fn.name, args)], {"T": T, "min_weight": float(w[..., allowed].min())}

    def judge(self, fn: Function, case: Case, expected: Any, replies: list[Reply]) -> Comparison:
        (reply,) = replies
        failed = reply_failure(fn, reply)
        if failed:
            return failed
        T = int(expected["T"])
        name = output_name(fn, self.output)
        got = pick(reply.value, self.output)
        if not isinstance(got, Received) or got.array.ndim < 2 or tuple(got.array.shape[-2:]) != (T, T):
            return Comparison(
                False, f"{name} is {describe(got)}, expected attention weights of shape (..., {T}, {T})"
            )
        w = got.array.astype(np.float64).reshape(-1, T, T)
        tol = _tol(case)
        future = np.triu(np.ones((T, T), dtype=bool), 1)
        with np.errstate(invalid="ignore"):
            leak = np.abs(np.where(future, w, 0.0))
            leak = np.where(np.isnan(leak), 0.0, leak)
        if (leak > tol.atol).any():
            pairs = sorted({(int(a), int(b)) for _, a, b in np.argwhere(leak > tol.atol)})
            t, s = pairs[0]
            n = int(np.argmax(leak[:, t, s]))
            return Comparison(
                False,
                f"position t={t} attends to the future position t={s}: {name}[..., {t}, {s}] is "
                f"{w[n, t, s]:.2g}, must be 0; {len(pairs)} of {T * (T - 1) // 2} future pairs have weight",
                float(leak[n, t, s]),
                (t, s),
            )
        attends = w > 1e-3 * float(expected["min_weight"])  # NaN compares False: not attending
        for t in range(T):
            if not attends[:, t, t].all():
                return Comparison(
                    False,
                    f"position t={t} does not attend to itself: {name}[..., {t}, {t}] is "
                    f"{w[:, t, t][~attends[:, t, t]][0]:.2g} (over-masked: the diagonal must be allowed)",
                    None,
                    (t, t),
                )
        for t in range(T):
            for s in range(t):
                if not attends[:, t, s].all():
                    return Comparison(
                        False,
                        f"position t={t} does not attend to the earlier position t={s}: "
                        f"{name}[..., {t}, {s}] is {w[:, t, s][~attends[:, t, s]][0]:.2g} (over-masked)",
                        None,
                        (t, s),
                    )
        sums = w.sum(axis=-1)  # (N, T)
        off = np.abs(sums - 1.0)
        if not (off <= 10 * tol.atol + tol.rtol).all():
            n, t = (
                int(i)
                for i in np.unravel_index(int(np.argmax(np.where(np.isnan(off), np.inf, off))), off.shape)
            )
            return Comparison(
                False,
                f"row t={t} of {name} sums to {sums[n, t]:.6g}, must be 1 (softmax over the keys, the last "
                "axis; renormalise if you mask after the softmax)",
                float(off[n, t]),
                (t,),
            )
        return Comparison(True)


# ----------------------------------------------------------------------------------------------- masks


class CausalMaskCheck(Check):
    """A returned boolean causal mask (T, T), True = may attend: True on and below the diagonal only."""

    kind = "causal: mask"

    def __init__(self, output: Path = ()):
        self.output = tuple(output)

    def prepare(
        self, plan: Plan, fn: Function, case: Case, reference: Callable[..., Any], gen: torch.Generator
    ):
        args = ordered_args(fn, case)
        T = int(pick(reference(*args), self.output).shape[-1])
        return [Call(fn.name, args)], {"T": T}

    def judge(self, fn: Function, case: Case, expected: Any, replies: list[Reply]) -> Comparison:
        (reply,) = replies
        failed = reply_failure(fn, reply)
        if failed:
            return failed
        T = int(expected["T"])
        name = output_name(fn, self.output)
        got = pick(reply.value, self.output)
        if not isinstance(got, Received) or tuple(got.array.shape) != (T, T):
            return Comparison(
                False, f"{name} is {describe(got)}, expected a torch.bool tensor of shape ({T}, {T})"
            )
        m = got.array
        if m.dtype != np.bool_:
            return Comparison(
                False, f"{name} has dtype torch.{m.dtype}, expected torch.bool (True = may attend)"
            )
        want = np.tril(np.ones((T, T), dtype=bool))
        hint = ""
        if np.array_equal(m, ~want):
            hint = (
                " The polarity is inverted: True must mean 'may attend' (opposite to nn.MultiheadAttention)."
            )
        elif np.array_equal(m, want.T):
            hint = " The mask is transposed: row t is the query, column s the key."
        future = np.argwhere(m & ~want)
        if len(future):
            t, s = (int(i) for i in future[0])
            msg = f"position t={t} may attend to the future position t={s} ({name}[{t}, {s}] is True)."
            return Comparison(False, msg + hint, None, (t, s))
        blocked = np.argwhere(~m & want)
        if len(blocked):
            t, s = (int(i) for i in blocked[0])
            who = "itself" if t == s else f"the earlier position t={s}"
            msg = f"position t={t} may not attend to {who} ({name}[{t}, {s}] is False): over-masked."
            return Comparison(False, msg + hint, None, (t, s))
        return Comparison(True)
