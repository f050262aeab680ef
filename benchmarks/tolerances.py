"""Measure float noise of correct implementations, to set the comparison tolerances from data.

For every function of the given assignments and every hidden case shape, run the reference and each correct
example style in the case's dtype and compare with the float64 reference on the same inputs. Prints, per
dtype, the largest abs error and the largest error relative to the tolerance in grader.plan (must be << 1).

    python benchmarks/tolerances.py rnn gated
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from grader.cases import derive_seed, make_case
from grader.checks import to_numpy, upcast
from grader.plan import load_plan

ROOT = Path(__file__).resolve().parent.parent


def leaves(tree):
    """Leaves in a canonical order (dicts by key: students may build them in any order)."""
    if isinstance(tree, (tuple, list)):
        return [x for t in tree for x in leaves(t)]
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves(tree[k])]
    return [tree]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_style", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(names: list[str]) -> None:
    for name in names:
        plan = load_plan(name)
        styles = {}
        ref_mod = __import__(f"reference.{name}", fromlist=["_"])
        styles["reference"] = ref_mod
        for p in sorted((ROOT / "examples" / name).glob("correct*.py")):
            styles[p.stem] = load(p)
        for p in sorted((ROOT / "tests" / "submissions" / name).glob("correct*.py")):
            styles["tests/" + p.stem] = load(p)
        for fn in plan.functions:
            worst: dict[str, tuple[float, float]] = {}
            for index, params in enumerate(fn.hidden):
                for dtype in fn.dtypes:
                    for trial in range(5):
                        seed = derive_seed(b"noise", name, fn.name, index, dtype, trial)
                        case = make_case(fn, "hidden", index, params, dtype, seed)
                        args = tuple(case.inputs[a] for a in fn.args)
                        truth = [
                            np.asarray(x, dtype=np.float64)
                            for x in leaves(to_numpy(getattr(ref_mod, fn.name)(*upcast(args))))
                        ]
                        tol = fn.tol(dtype)
                        for mod in styles.values():
                            f = getattr(mod, fn.name, None)
                            if f is None:
                                continue
                            with torch.no_grad():
                                got = [np.asarray(x, dtype=np.float64) for x in leaves(to_numpy(f(*args)))]
                            for e, g in zip(truth, got, strict=True):
                                err = np.abs(g - e)
                                ratio = (err / (tol.atol + tol.rtol * np.abs(e))).max() if err.size else 0.0
                                a, r = worst.get(dtype, (0.0, 0.0))
                                worst[dtype] = (max(a, float(err.max(initial=0))), max(r, float(ratio)))
            for dtype, (a, r) in worst.items():
                print(
                    f"{name}.{fn.name:16s} {dtype}: max abs error {a:.2e}, worst error / tolerance {r:.3f} "
                    f"({len(styles)} styles)"
                )


if __name__ == "__main__":
    main(sys.argv[1:] or ["rnn", "gated"])
