"""The pure comparison core: expected vs got, with tolerances. No I/O, no torch, no printing.

Trees are nested tuples/lists/dicts of arrays and scalars, as grader.wire decodes them. Expected arrays
may carry more precision than the student's dtype (float32 cases are compared with a float64 reference
run on the same float32 inputs), so the dtype to expect is passed separately.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.wire import Other, Received


@dataclass(frozen=True)
class Tolerance:
    """Element-wise |got - expected| <= atol + rtol * |expected| (numpy.isclose semantics)."""

    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol {self.atol:.0e}, rtol {self.rtol:.0e}"


EXACT = Tolerance(0.0, 0.0)


@dataclass(frozen=True)
class Comparison:
    """The verdict of one comparison: ok, and if not, a message naming what differs and where."""

    ok: bool
    message: str = ""
    max_abs_error: float | None = None
    where: tuple[int, ...] | None = None


PASS = Comparison(True)


def describe(v: Any) -> str:
    """A short description of a received value for messages: never its contents."""
    if isinstance(v, Received):
        kind = "tensor" if v.kind == "tensor" else "numpy array"
        return f"a {kind} of shape {tuple(v.array.shape)} and dtype {_dt(v.array.dtype)}"
    if isinstance(v, np.ndarray):
        return f"an array of shape {tuple(v.shape)} and dtype {_dt(v.dtype)}"
    if isinstance(v, Other):
        return f"a {v.type_name}"
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, (int, float)):
        return f"a Python {type(v).__name__}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)}"
    if isinstance(v, list):
        return f"a list of {len(v)}"
    if isinstance(v, dict):
        return f"a dict with keys {sorted(v)}"
    return f"a {type(v).__name__}"


def _dt(dtype: np.dtype) -> str:
    return f"torch.{np.dtype(dtype).name}" if np.dtype(dtype).name != "bool" else "torch.bool"


def compare_array(
    name: str,
    expected: np.ndarray,
    got: Any,
    tol: Tolerance,
    *,
    dtype: str | None = None,
    reveal: bool = False,
    require_tensor: bool = True,
) -> Comparison:
    """Compare one array. `dtype` is the dtype the student must return (default: expected's).

    `reveal` allows quoting expected values (public cases only); hidden values are never quoted.
    """
    expected = np.asarray(expected)
    want_dtype = np.dtype(dtype) if dtype is not None else expected.dtype
    if isinstance(got, (int, float)) and not isinstance(got, bool) and expected.ndim == 0:
        got_arr = np.asarray(got, dtype=np.float64)
    elif isinstance(got, Received):
        if require_tensor and got.kind != "tensor":
            return Comparison(False, f"{name} is {describe(got)}, expected a torch.Tensor")
        got_arr = got.array
        if tuple(got_arr.shape) != tuple(expected.shape):
            if got_arr.size == expected.size == 1 and expected.ndim == 0:
                got_arr = got_arr.reshape(())
            else:
                return Comparison(
                    False, f"{name} has shape {tuple(got_arr.shape)}, expected {tuple(expected.shape)}"
                )
        if got_arr.dtype != want_dtype:
            return Comparison(False, f"{name} has dtype {_dt(got_arr.dtype)}, expected {_dt(want_dtype)}")
    else:
        return Comparison(
            False, f"{name} is {describe(got)}, expected a tensor of shape {tuple(expected.shape)}"
        )
    return compare_values(name, expected, got_arr, tol, reveal=reveal)


def compare_values(
    name: str, expected: np.ndarray, got: np.ndarray, tol: Tolerance, *, reveal: bool
) -> Comparison:
    """Element-wise closeness of same-shaped arrays, reporting the worst element."""
    if expected.dtype.kind in "biu" or got.dtype.kind == "b":  # bools and integers: exactly equal
        bad = expected != got
        if not bad.any():
            return PASS
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        n = int(bad.sum())
        msg = f"{name} differs in {n} of {bad.size} elements, first at {list(idx)}"
        if reveal:
            msg += f" (expected {expected[idx].item()}, got {got[idx].item()})"
        return Comparison(False, msg, None, idx)
    if expected.size == 0:
        return PASS
    bound = _bound(expected, tol)
    if bound is not None:  # the common case first: a finite reference, and got close to it everywhere
        # with one side within float32's range the float64 difference rounds at worst to float64's max:
        # no errstate then (a third of this path's time)
        narrow = got.dtype.itemsize < 8 or expected.dtype.itemsize < 8
        with _NO_GUARD if narrow else np.errstate(over="ignore"):
            err = np.abs(np.subtract(got, expected, dtype=np.float64))  # NaN or inf where not finite
        if np.count_nonzero(err <= bound) == err.size:  # not at a NaN; an inf exceeds any finite bound
            return PASS
    e = np.asarray(expected, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    finite_g = np.isfinite(g)
    if not np.array_equal(finite_g, np.isfinite(e)):
        bad = finite_g != np.isfinite(e)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(g[idx]) else ("inf" if np.isinf(g[idx]) else "a finite value")
        return Comparison(False, f"{name} has {what} at {list(idx)} where the reference does not", None, idx)
    with np.errstate(invalid="ignore", over="ignore"):  # a float64 near its limit minus another: inf
        err = np.where(finite_g, np.abs(g - e), 0.0)
        allowed = tol.atol + tol.rtol * np.abs(np.where(finite_g, e, 0.0))
        inf_mismatch = ~finite_g & (g != e)
    excess = err - allowed
    if not (excess > 0).any() and not inf_mismatch.any():
        return PASS
    if inf_mismatch.any():
        idx = tuple(int(i) for i in np.argwhere(inf_mismatch)[0])
        return Comparison(False, f"{name} has an infinity of the wrong sign at {list(idx)}", None, idx)
    flat = int(np.argmax(np.where(excess > 0, err, -1.0)))
    idx = tuple(int(i) for i in np.unravel_index(flat, e.shape)) if e.ndim else ()
    max_err = float(err.max())
    n_bad = int((excess > 0).sum())
    msg = f"{name}: max abs error {max_err:.2g} at {list(idx)} ({tol}); {n_bad} of {e.size} elements out of tolerance"
    if reveal:
        digits = next((d for d in (6, 10, 17) if f"{e[idx]:.{d}g}" != f"{g[idx]:.{d}g}"), 17)
        msg += f"; expected {e[idx]:.{digits}g}, got {g[idx]:.{digits}g}"
    return Comparison(False, msg, max_err, idx)


_NO_GUARD = contextlib.nullcontext()  # reusable
_BOUNDS: dict[int, tuple[weakref.ref, Tolerance, np.ndarray | None]] = {}


def _bound(expected: np.ndarray, tol: Tolerance) -> np.ndarray | None:
    """atol + rtol * |expected| in float64, or None where expected has a value that is not finite.

    Kept while `expected` lives: a case set's reference outputs are compared with every submission's,
    and this is half the work of a passing comparison."""
    key = id(expected)
    hit = _BOUNDS.get(key)
    if hit is not None and hit[0]() is expected and hit[1] == tol:
        return hit[2]
    e = np.asarray(expected, dtype=np.float64)
    bound = tol.atol + tol.rtol * np.abs(e) if np.isfinite(e).all() else None
    try:
        ref = weakref.ref(expected, lambda _, key=key: _BOUNDS.pop(key, None))
    except TypeError:  # not weak-referenceable (a numpy scalar): not kept
        return bound
    _BOUNDS[key] = (ref, tol, bound)
    return bound


def compare_tree(
    name: str,
    expected: Any,
    got: Any,
    tol: Tolerance,
    *,
    dtype: str | None = None,
    reveal: bool = False,
    names: Any = None,
) -> Comparison:
    """Compare nested outputs. `names` mirrors `expected` with a name per leaf (else index paths).

    Lists in expected accept lists or tuples; tuples accept tuples or lists of the same length.
    Leaves: arrays (compared with compare_array), numbers (0-dim), None.
    """
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or isinstance(got, Received):
            return Comparison(False, f"{name} is {describe(got)}, expected a tuple of {len(expected)}")
        if len(got) != len(expected):
            return Comparison(False, f"{name} has {len(got)} elements, expected {len(expected)}")
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            sub = names[i] if isinstance(names, (tuple, list)) and i < len(names) else None
            label = _leaf_name(sub) or f"{name}[{i}]"
            c = compare_tree(label, e, g, tol, dtype=dtype, reveal=reveal, names=sub)
            if not c.ok:
                return c
        return PASS
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return Comparison(
                False, f"{name} is {describe(got)}, expected a dict with keys {sorted(expected)}"
            )
        missing = [k for k in expected if k not in got]
        if missing:
            return Comparison(False, f"{name} lacks the keys {missing}")
        for k, e in expected.items():
            c = compare_tree(
                k if name in ("", "output") else f"{name}[{k!r}]", e, got[k], tol, dtype=dtype, reveal=reveal
            )
            if not c.ok:
                return c
        return PASS
    if expected is None:
        return PASS if got is None else Comparison(False, f"{name} is {describe(got)}, expected None")
    if isinstance(expected, Received):
        expected = expected.array
    if isinstance(expected, (int, float, np.ndarray)) and not isinstance(expected, bool):
        exp_arr = np.asarray(expected)
        leaf_dtype = dtype if exp_arr.dtype.kind == "f" else None
        return compare_array(_leaf_name(names) or name, exp_arr, got, tol, dtype=leaf_dtype, reveal=reveal)
    if isinstance(expected, bool):
        return PASS if got == expected else Comparison(False, f"{name} is {describe(got)}, expected a bool")
    raise TypeError(f"cannot compare an expected value of type {type(expected).__name__}")


def _leaf_name(names: Any) -> str | None:
    return names if isinstance(names, str) else None
