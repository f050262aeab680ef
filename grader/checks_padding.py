"""Padding invariance: a function of a padded batch must not care what the padding holds or how long it is.

    PaddingInvarianceCheck   call the student's function twice: on the case as generated (its padding
                             already holds arbitrary values), and on a copy whose padding is refilled with
                             other values and made `extra` positions longer. Both answers must equal the
                             reference at the real positions; outputs named in `zero` must be exactly 0 at
                             padded positions.

Which positions are real comes from a lengths argument ((B,) int64: t < lengths[b] is real) or a mask argument
((B, T) bool, True = real). Padded inputs are (argument name, time dim) pairs with the batch on dim 0; outputs
with a padded time axis are (path into the return value, time dim) pairs and are compared at real positions
only; every other output leaf is compared whole. Messages name the output, the position and the change:
"out at [1, 3] differs by 2.1e-01 when the padding changes (new pad values, T 5 -> 8)".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from grader.causal import output_name, pick, timed
from grader.checks import Check, ordered_args, reply_failure, to_numpy, upcast
from grader.compare import Comparison, compare_array, compare_values, describe
from grader.plan import Call, Case, Function, Plan, Reply
from grader.wire import Received


def leaf_paths(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every leaf of a nested tuple/list/dict."""
    if isinstance(tree, (tuple, list)):
        return [p for i, x in enumerate(tree) for p in leaf_paths(x, (*path, i))]
    if isinstance(tree, dict):
        return [p for k, x in tree.items() for p in leaf_paths(x, (*path, k))]
    return [path]


class PaddingInvarianceCheck(Check):
    """Refill the padding with other values and lengthen it: outputs at real positions must not change.

    `padded`: (argument, time dim) pairs holding padding. `lengths` or `mask`: the argument saying which
    positions are real. `outputs`: (path, time dim) pairs of outputs with a padded axis (compared at real
    positions); other output leaves are compared whole. `zero`: paths of outputs that must be exactly 0 at
    padded positions (attention weights). `n_ids(inputs)`: the number of token ids, for integer inputs.
    """

    kind = "padding invariance"

    def __init__(
        self,
        padded: Any = (("x", 1),),
        outputs: Any = (((0,), 1),),
        *,
        lengths: str | None = "lengths",
        mask: str | None = None,
        zero: tuple[tuple[Any, ...], ...] = (),
        extra: int = 3,
        n_ids: Callable[[Mapping[str, Any]], int] | None = None,
    ):
        if (lengths is None) == (mask is None):
            raise ValueError("give exactly one of lengths= and mask=")
        self.padded = timed(padded)
        self.outputs = timed(outputs)
        self.lengths, self.mask = lengths, mask
        self.zero = tuple(tuple(z) for z in zero)
        self.extra = extra
        self.n_ids = n_ids

    def valid(self, inputs: Mapping[str, Any], T: int) -> torch.Tensor:
        """(B, T) bool, True at real positions."""
        if self.mask is not None:
            return inputs[self.mask].bool()
        return torch.arange(T)[None, :] < inputs[self.lengths][:, None]

    def refill(self, x: torch.Tensor, dim: int, valid: torch.Tensor, gen: torch.Generator, n_ids: int | None):
        """x lengthened by `extra` positions along dim, every padded position holding new values."""
        shape = list(x.shape)
        shape[dim] += self.extra
        if x.is_floating_point():
            rms = float(x.double().pow(2).mean().sqrt()) or 1.0
            new = (torch.randn(shape, generator=gen, dtype=torch.float64) * (3 * rms + 1)).to(x.dtype)
        else:
            new = torch.randint(0, max(n_ids or int(x.max()) + 1, 1), shape, generator=gen, dtype=x.dtype)
        keep = valid.reshape(valid.shape + (1,) * (x.ndim - 2)).movedim(1, dim)  # real positions, as x
        T = x.shape[dim]
        head = new.narrow(dim, 0, T)
        head.copy_(torch.where(keep, x, head))
        return new

    def prepare(
        self, plan: Plan, fn: Function, case: Case, reference: Callable[..., Any], gen: torch.Generator
    ):
        inputs = dict(case.inputs)
        T = int(inputs[self.padded[0].at].shape[self.padded[0].dim])
        valid = self.valid(inputs, T)
        if bool(valid.all()):
            raise ValueError("the case has no padding: vacuous check")
        n_ids = self.n_ids(inputs) if self.n_ids else None
        other = dict(inputs)
        for p in self.padded:
            other[p.at] = self.refill(inputs[p.at], p.dim, valid, gen, n_ids)
        if self.mask is not None:
            other[self.mask] = torch.cat([valid, valid.new_zeros(valid.shape[0], self.extra)], dim=1)
        args = ordered_args(fn, case)
        with torch.no_grad():
            value = to_numpy(reference(*upcast(args)))
        expected = {"value": value, "valid": valid.numpy(), "T": T}
        return [Call(fn.name, args), Call(fn.name, tuple(other[a] for a in fn.args))], expected

    def judge(self, fn: Function, case: Case, expected: Any, replies: list[Reply]) -> Comparison:
        """In order: padded positions of `zero` outputs are 0; real positions do not move when the padding
        changes; both answers equal the reference at real positions."""
        for r in replies:
            failed = reply_failure(fn, r)
            if failed:
                return failed
        valid = np.asarray(expected["valid"], dtype=bool)
        T = int(expected["T"])
        lengths = (T, T + self.extra)
        changed = f"when the padding changes (new pad values, T {T} -> {T + self.extra})"
        variants = ("with the original padding", changed)
        dims = {tuple(o.at): o.dim for o in self.outputs}
        paths = leaf_paths(expected["value"])
        real: dict[tuple[int, tuple[Any, ...]], Any] = {}
        for v, reply in enumerate(replies):
            for path in paths:
                got, msg = self._real(fn, case, expected, reply, path, dims.get(path), valid, lengths[v])
                if msg:
                    return Comparison(False, f"{variants[v]}: {msg}")
                real[v, path] = got
        tol = fn.tol(case.dtype)
        for path in paths:
            a, b = real[0, path], real[1, path]
            if a.shape == b.shape and not compare_values("", a, b, tol, reveal=False).ok:
                c = compare_values(output_name(fn, path), a, b, tol, reveal=False)
                where = self._where(c, dims.get(path), valid)
                size = f" by {c.max_abs_error:.2g} ({tol})" if c.max_abs_error is not None else ""
                return Comparison(
                    False,
                    f"{output_name(fn, path)}{where} changes {changed}{size}: it reads the padding",
                    c.max_abs_error,
                )
        reveal = case.visibility == "public"
        for v in range(2):
            for path in paths:
                want = np.asarray(pick(expected["value"], path))
                name = output_name(fn, path)
                dim = dims.get(path)
                if dim is None:
                    c = compare_array(
                        name,
                        want,
                        pick(replies[v].value, path),
                        tol,
                        dtype=case.dtype if want.dtype.kind == "f" else None,
                        reveal=reveal,
                    )
                else:
                    c = compare_values(
                        name, np.moveaxis(want, dim, 1)[valid], real[v, path], tol, reveal=reveal
                    )
                if not c.ok:
                    where = self._where(c, dim, valid) if dim is not None else ""
                    return Comparison(
                        False, f"{variants[v]}: {name}{where} is wrong: {c.message}", c.max_abs_error
                    )
        return Comparison(True)

    def _real(self, fn, case, expected, reply, path, dim, valid, length) -> tuple[Any, str]:
        """The output at `path` at real positions (whole if it has no padded axis), or an error message."""
        want = np.asarray(pick(expected["value"], path))
        name = output_name(fn, path)
        got = pick(reply.value, path)
        if not isinstance(got, Received):
            if dim is None and isinstance(got, (int, float)) and want.ndim == 0:
                return np.asarray(got, dtype=np.float64), ""
            return None, f"{name} is {describe(got)}, expected a tensor"
        arr = got.array
        shape = list(want.shape)
        if dim is not None:
            shape[dim] = length
        if list(arr.shape) != shape:
            return None, f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}"
        if dim is None:
            return arr, ""
        moved = np.moveaxis(arr, dim, 1)  # (B, T', ...)
        if tuple(path) in self.zero:
            pad = np.ones(moved.shape[:2], dtype=bool)
            pad[:, : valid.shape[1]] = ~valid
            bad = np.argwhere(pad & (moved.reshape(moved.shape[:2] + (-1,)) != 0).any(-1))
            if len(bad):
                b, t = bad[0].tolist()
                return None, (
                    f"{name} is not 0 at the padded position [b, t] = [{b}, {t}]: padding must "
                    "receive exactly zero weight (mask before the softmax)"
                )
        return moved[:, : valid.shape[1]][valid], ""

    @staticmethod
    def _where(c: Comparison, dim: int | None, valid: np.ndarray) -> str:
        if dim is None or not c.where:
            return ""
        b, t = np.argwhere(valid)[c.where[0]].tolist()
        return f" at the real position [b, t] = [{b}, {t}]"
