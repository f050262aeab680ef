"""Measure float noise of correct implementations, to set the comparison tolerances from data.

For every function of the given assignments, build its hidden cases from many secrets (the same cases
grading builds, `grader.cases.build`), run every correct style in the case's dtype in this process and judge
its reply with the plan's own checks: the forward check (outputs vs the float64 reference on the same
inputs) and, with --gradients, the gradient check (autograd through the style vs the reference, the same
projection the worker gets). Prints per function, dtype and check: the largest abs error, the largest error
relative to the tolerance in force (`fn.tol`, must be << 1), the atol that error would need at the
tolerance's rtol, and how many checks failed.

Styles: the reference module itself run in the case's dtype, examples/NAME/correct*.py,
tests/submissions/NAME/correct*.py, and "float64-inside" (the reference on float64 copies of the inputs,
cast back: the noise floor a careful student can reach).

    python benchmarks/tolerances.py rnn gated
    python benchmarks/tolerances.py transformer --only layer_norm --gradients --secrets 2000 --by-style

Measured for layer_norm (float32; 6 float32 styles, and float64-inside at the floor):
  --secrets 20000 (secrets noise-0 ...): gradients need an atol of up to 1.1e-3 at rtol 1e-4
  (var(unbiased=False) and var_mean styles; 8.7e-4 reference and rsqrt); the forward 1.2e-5. Under the
  default float32 tolerance (2e-5) 74 to 154 of the first 40000 gradient checks (10000 secrets) failed;
  under layer_norm's own (1e-2, rtol 1e-4) none of 80000, worst error / tolerance 0.28.
  --secrets 20000 --secret-prefix tail-: gradients up to 2.4e-3 (the worst seen; reference and rsqrt 2.3e-3),
  none failing layer_norm's tolerance, worst error / tolerance 0.29.
The noisy rows are in the narrow case (D = 2) when a row's two values are close by chance: its variance is
then near eps and 1/sigma^2 amplifies the float32 rounding of x - mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from grader import cases
from grader.checks import ForwardCheck, GradientCheck, leaves, map_leaves, to_numpy
from grader.compare import Tolerance
from grader.plan import Function, Reply, load_plan
from grader.wire import Received

ROOT = Path(__file__).resolve().parent.parent


def canonical(tree: Any) -> list[Any]:
    """Leaves in a canonical order (dicts by key: students may build them in any order)."""
    if isinstance(tree, (tuple, list)):
        return [x for t in tree for x in canonical(t)]
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in canonical(tree[k])]
    return [tree]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_style", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def float64_inside(f: Callable[..., Any]) -> Callable[..., Any]:
    """`f` run on float64 copies of the inputs (autograd kept), its float outputs cast back to the input dtype."""

    def run(*args: Any) -> Any:
        dtype = next((t.dtype for t in leaves(args) if _is_float(t)), None)
        if dtype is None:
            return f(*args)
        out = f(*map_leaves(args, lambda t: t.to(torch.float64) if _is_float(t) else t))
        return map_leaves(out, lambda t: t.to(dtype) if _is_float(t) else t)

    return run


def styles_of(name: str) -> dict[str, Any]:
    """name -> module (or namespace) holding the assignment's functions, for every correct style."""
    ref = __import__(f"reference.{name}", fromlist=["_"])
    styles: dict[str, Any] = {"reference": ref}
    for p in sorted((ROOT / "examples" / name).glob("correct*.py")):
        styles[p.stem] = load(p)
    for p in sorted((ROOT / "tests" / "submissions" / name).glob("correct*.py")):
        styles["tests/" + p.stem] = load(p)
    styles["float64-inside"] = SimpleNamespace(
        **{n: float64_inside(f) for n, f in vars(ref).items() if inspect.isfunction(f)}
    )
    return styles


# ----------------------------------------------------------------------------------------------- one reply


def forward_reply(f: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Reply, Any]:
    with torch.no_grad():
        out = f(*args)
    value = map_leaves(to_numpy(out), lambda a: Received(a, "tensor") if isinstance(a, np.ndarray) else a)
    return Reply(value=value), to_numpy(out)


def gradient_reply(
    f: Callable[..., Any], args: tuple[Any, ...], grad_wrt: tuple[int, ...], projection: Any
) -> tuple[Reply, Any]:
    """What the worker sends back for a gradient call: L = sum <P, outputs>, autograd to the float leaves."""
    args = list(args)
    for i in grad_wrt:
        args[i] = map_leaves(
            args[i], lambda t: t.detach().clone().requires_grad_(True) if _is_float(t) else t
        )
    out = f(*args)
    wanted = [t for i in grad_wrt for t in leaves(args[i]) if _is_float(t)]
    terms = [
        (o * p.to(o.dtype)).sum()
        for o, p in zip(leaves(out), leaves(projection), strict=True)
        if p is not None and o.requires_grad
    ]
    flat = iter(torch.autograd.grad(sum(terms), wanted, allow_unused=True) if terms else [None] * len(wanted))

    def regroup(t: Any) -> Any:
        if not _is_float(t):
            return None
        g = next(flat)
        return None if g is None else Received(g.detach().numpy(), "tensor")

    grads = tuple(map_leaves(args[i], regroup) for i in grad_wrt)
    return Reply(grads=grads), [
        map_leaves(g, lambda r: r.array if isinstance(r, Received) else r) for g in grads
    ]


def errors(expected: Any, got: Any, tol: Tolerance) -> tuple[float, float, float]:
    """(max abs error, max error / tolerance, atol needed at tol.rtol) over the float leaves of two trees."""
    worst = (0.0, 0.0, 0.0)
    for e, g in zip(canonical(expected), canonical(got), strict=False):
        if not isinstance(e, np.ndarray) or not isinstance(g, np.ndarray) or e.shape != g.shape or not e.size:
            continue
        if not np.issubdtype(e.dtype, np.floating):
            continue
        e64, g64 = e.astype(np.float64), g.astype(np.float64)
        err = np.abs(g64 - e64)
        ratio = float((err / (tol.atol + tol.rtol * np.abs(e64))).max())
        need = float((err - tol.rtol * np.abs(e64)).max())
        worst = (max(worst[0], float(err.max())), max(worst[1], ratio), max(worst[2], need))
    return worst


# ----------------------------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Noise:
    abs_error: float = 0.0
    ratio: float = 0.0
    atol_needed: float = 0.0
    failed: int = 0
    runs: int = 0

    def add(self, e: tuple[float, float, float], ok: bool) -> None:
        self.abs_error, self.ratio, self.atol_needed = (
            max(a, b) for a, b in zip(self.as_tuple(), e, strict=True)
        )
        self.failed += not ok
        self.runs += 1

    def as_tuple(self) -> tuple[float, float, float]:
        return self.abs_error, self.ratio, self.atol_needed


def measure(name: str, fn: Function, styles: dict[str, Any], secrets: list[bytes], gradients: bool) -> dict:
    """(dtype, check kind, style) -> Noise, over the hidden cases built from each secret."""
    plan = load_plan(name)
    one = dataclasses.replace(plan, functions=(fn,))  # same seeds: they depend on the names, not the plan
    kinds = (ForwardCheck, GradientCheck) if gradients else (ForwardCheck,)
    noise: dict[tuple[str, str, str], Noise] = {}
    for secret in secrets:
        for item in cases.build(one, "hidden", secret).items:
            check = fn.checks[item.check]
            if not isinstance(check, kinds):
                continue
            tol = fn.tol(item.case.dtype)
            for style, mod in styles.items():
                f = getattr(mod, fn.name, None)
                if f is None:
                    continue
                replies, got = [], []
                for call in item.calls:
                    if isinstance(check, GradientCheck):
                        r, g = gradient_reply(f, call.args, call.grad_wrt, call.projection)
                    else:
                        r, g = forward_reply(f, call.args)
                    replies.append(r)
                    got.append(g)
                want = item.expected["grads"] if isinstance(check, GradientCheck) else item.expected["value"]
                ok = check.judge(fn, item.case, item.expected, replies).ok
                key = (item.case.dtype, check.kind, style)
                noise.setdefault(key, Noise()).add(errors(want, got[0], tol), ok)
    return noise


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["rnn", "gated"])
    ap.add_argument("--only", default="", help="one function of the assignment")
    ap.add_argument("--secrets", type=int, default=5, help="hidden case sets to measure (one per secret)")
    ap.add_argument("--secret-prefix", default="noise-", help="secrets are PREFIX0, PREFIX1, ...")
    ap.add_argument("--gradients", action="store_true", help="also the gradient checks")
    ap.add_argument("--by-style", action="store_true", help="one line per style, not only the worst")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name in a.names:
        plan = load_plan(name)
        styles = styles_of(name)
        for fn in plan.functions:
            if a.only and fn.name != a.only:
                continue
            secrets = [f"{a.secret_prefix}{i}".encode() for i in range(a.secrets)]
            noise = measure(name, fn, styles, secrets, a.gradients)
            groups: dict[tuple[str, str], list[tuple[str, Noise]]] = {}
            for (dtype, kind, style), n in sorted(noise.items()):
                groups.setdefault((dtype, kind), []).append((style, n))
            for (dtype, kind), rows in groups.items():
                worst = max(rows, key=lambda r: r[1].ratio)
                shown = rows if a.by_style else [worst]
                for style, n in shown:
                    print(
                        f"{name}.{fn.name:16s} {dtype} {kind:9s}: max abs error {n.abs_error:.2e}, worst "
                        f"error / tolerance {n.ratio:.3f}, atol needed {n.atol_needed:.1e} at rtol "
                        f"{fn.tol(dtype).rtol:.0e}; failed {n.failed}/{n.runs} "
                        + (f"[{style}]" if a.by_style else f"(worst: {style}; {len(rows)} styles)")
                    )


if __name__ == "__main__":
    main()
