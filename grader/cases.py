"""Make cases: public ones (fixed seed, shipped as .npz) and hidden ones (derived from the instructor's
secret), each prepared by its checks in the trusted process — reference outputs computed once per case set.

    build(plan, "hidden", secret) -> CaseSet       trusted: imports the reference
    load_public(plan)              -> CaseSet       from student_template/<name>_public.npz: no reference needed
    write_public(plan, path)                        used by `python -m grader.cases build-public NAME`

A CaseSet is a list of Prepared items, one per (function, case, check): the calls to send to the worker
and the expected tree that stays in this process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grader import wire
from grader.errors import ConfigError
from grader.plan import Call, Case, Function, Plan, label, load_plan

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "student_template"
PUBLIC_SEED = b"seqgrade-public-cases-v1"
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class Prepared:
    """One (function, case, check): the calls for the worker and what the trusted side expects."""

    function: str
    check: int  # index into the function's checks
    kind: str
    case: Case
    calls: tuple[Call, ...]
    expected: Any


@dataclass(frozen=True)
class CaseSet:
    plan: Plan
    visibility: str
    items: tuple[Prepared, ...]

    def for_function(self, name: str) -> list[Prepared]:
        return [p for p in self.items if p.function == name]


# ----------------------------------------------------------------------------------------------- secret


def load_secret(path: Path | None = None, *, create: bool = True) -> tuple[bytes, str]:
    """The instructor's secret and a line saying where it came from.

    Order: $SEQGRADE_SECRET, then `path`, then ./.seqgrade/secret (created, git-ignored, if missing).
    """
    env = os.environ.get("SEQGRADE_SECRET")
    if env:
        return env.encode(), "secret from $SEQGRADE_SECRET"
    p = Path(path) if path else Path(".seqgrade") / "secret"
    if p.is_file():
        data = p.read_bytes().strip()
        if not data:
            raise ConfigError(f"secret file {p} is empty")
        return data, f"secret from {p}"
    if path is not None or not create:
        raise ConfigError(f"secret file {p} does not exist")
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.parent / ".gitignore").write_text("*\n")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return p.read_bytes().strip(), f"created a new secret in {p} (git-ignored; keep it to reproduce grades)"


def derive_seed(key: bytes, *parts: Any) -> int:
    msg = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:8], "big") & ((1 << 63) - 1)


def fingerprint(secret: bytes) -> str:
    """A short, non-reversible id of the secret for cache keys and reports."""
    return hashlib.sha256(b"seqgrade-fp" + secret).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- building


def build(plan: Plan, visibility: str, secret: bytes | None = None) -> CaseSet:
    """Prepare every (function, case, check) of `plan` for `visibility` ("public" or "hidden")."""
    key = PUBLIC_SEED if visibility == "public" else secret
    if key is None:
        raise ConfigError("hidden cases need the instructor's secret")
    items: list[Prepared] = []
    for fn in plan.functions:
        reference = plan.reference_of(fn)
        params_list = fn.public if visibility == "public" else fn.hidden
        for index, params in enumerate(params_list):
            for dtype in fn.dtypes:
                seed = derive_seed(key, plan.name, fn.name, visibility, index, dtype)
                case = make_case(fn, visibility, index, params, dtype, seed)
                for ci, check in enumerate(fn.checks):
                    gen = torch.Generator().manual_seed(
                        derive_seed(key, plan.name, fn.name, index, dtype, ci)
                    )
                    try:
                        calls, expected = check.prepare(plan, fn, case, reference, gen)
                    except Exception as e:
                        raise ConfigError(
                            f"{plan.name}.{fn.name}: preparing {check.kind} on ({case.title}) failed: "
                            f"{e.__class__.__name__}: {e}"
                        ) from e
                    items.append(Prepared(fn.name, ci, check.kind, case, tuple(calls), expected))
    return CaseSet(plan, visibility, tuple(items))


def make_case(fn: Function, visibility: str, index: int, params: Any, dtype: str, seed: int) -> Case:
    gen = torch.Generator().manual_seed(seed)
    inputs = fn.make_inputs(gen, dict(params), DTYPES.get(dtype, dtype))
    missing = [a for a in fn.args if a not in inputs]
    if missing:
        raise ConfigError(f"{fn.name}: make_inputs did not build {missing}")
    return Case(fn.name, visibility, dtype, label(params), index, inputs)


# ----------------------------------------------------------------------------------------------- public .npz


def public_path(plan: Plan) -> Path:
    return TEMPLATE_DIR / f"{plan.name}_public.npz"


def write_public(plan: Plan, path: Path | None = None) -> Path:
    """Serialise the public CaseSet (inputs, calls and expected outputs) to .npz: no pickle anywhere."""
    cs = build(plan, "public")
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, p in enumerate(cs.items):
        meta = {
            "function": p.function,
            "check": p.check,
            "kind": p.kind,
            "case": {
                "visibility": p.case.visibility,
                "dtype": p.case.dtype,
                "label": p.case.label,
                "index": p.case.index,
                "args": list(p.case.inputs),
            },
            "calls": [{"function": c.function, "grad_wrt": list(c.grad_wrt)} for c in p.calls],
        }
        tree = {
            "inputs": [p.case.inputs[a] for a in p.case.inputs],
            "calls": [{"args": c.args, "projection": c.projection} for c in p.calls],
            "expected": p.expected,
        }
        arrays[f"item{i:04d}"] = np.frombuffer(wire.encode(meta, _torch_free(tree)), dtype=np.uint8)
        index.append(f"item{i:04d}")
    arrays["index"] = np.frombuffer(json.dumps({"plan": plan.name, "items": index}).encode(), dtype=np.uint8)
    out = Path(path) if path else public_path(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def public_difference(plan: Plan, path: Path | None = None) -> str:
    """Where the shipped public cases differ from what the plan and the reference give now ('' if nowhere):
    the calls and inputs bit for bit, the expected outputs to rtol 1e-9, atol 1e-12. The references run in
    float64 and another CPU family's BLAS kernels round their last bits differently (1e-13 relative, seen
    between an Intel and an AMD machine), which is not a change of the plan or the reference."""
    import tempfile

    old = load_public(plan, path)
    with tempfile.TemporaryDirectory() as tmp:
        new = load_public(plan, write_public(plan, Path(tmp) / "fresh.npz"))
    if len(old.items) != len(new.items):
        return f"{len(old.items)} cases shipped, {len(new.items)} now"

    def case(p: Prepared) -> tuple:
        return p.function, p.check, p.kind, p.case.dtype, p.case.label

    def inputs(p: Prepared) -> list:
        return [p.case.inputs, [(c.function, c.grad_wrt, c.args, c.projection) for c in p.calls]]

    for a, b in zip(old.items, new.items, strict=True):
        where = f"{a.function}, {a.kind} ({a.case.dtype}, {a.case.label})"
        if case(a) != case(b):
            return f"{where}: the case itself"
        at = _first_difference(inputs(a), inputs(b), close=False)
        if at is not None:
            return f"{where}: the inputs" + (f" at {at}" if at else "")
        at = _first_difference(a.expected, b.expected, close=True)
        if at is not None:
            return f"{where}: the expected output{at}"
    return ""


def _first_difference(a: Any, b: Any, *, close: bool) -> str | None:
    """The path of the first leaf where two case trees differ ('' when they have different numbers of
    leaves), None where they agree: bit for bit, or with `close` floats to rtol 1e-9, atol 1e-12."""
    leaves_a, leaves_b = list(_leaves(a)), list(_leaves(b))
    if len(leaves_a) != len(leaves_b):
        return ""
    for (pa, x), (pb, y) in zip(leaves_a, leaves_b, strict=True):
        same = pa == pb and x.shape == y.shape and x.dtype == y.dtype
        if same and close and x.dtype.kind == "f":
            same = bool(np.allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True))
        elif same:
            same = bool(np.array_equal(x, y))
        if not same:
            return pa
    return None


def _leaves(tree: Any, path: str = "") -> Any:
    """(path, numpy array) for every leaf of a case tree: tensors, received arrays, numbers, strings, None."""
    if isinstance(tree, (list, tuple)):
        if not tree:
            yield path, np.asarray(type(tree).__name__)
        for i, x in enumerate(tree):
            yield from _leaves(x, f"{path}[{i}]")
    elif isinstance(tree, dict):
        yield path, np.asarray(sorted(map(str, tree)))
        for k, x in tree.items():
            yield from _leaves(x, f"{path}.{k}")
    elif isinstance(tree, torch.Tensor):
        yield path, tree.detach().numpy()
    else:
        yield path, np.asarray(getattr(tree, "array", tree), dtype=object if tree is None else None)


def load_public(plan: Plan, path: Path | None = None) -> CaseSet:
    p = Path(path) if path else public_path(plan)
    if not p.is_file():
        raise ConfigError(f"public cases for {plan.name!r} not found at {p}")
    with np.load(p, allow_pickle=False) as npz:
        index = json.loads(npz["index"].tobytes().decode())
        items = []
        for key in index["items"]:
            data = npz[key].tobytes()
            jlen, plen = wire.HEADER.unpack(data[: wire.HEADER.size])
            js = data[wire.HEADER.size : wire.HEADER.size + jlen]
            meta, tree = wire.decode(js, data[wire.HEADER.size + jlen :])
            c = meta["case"]
            inputs = dict(zip(c["args"], _to_torch(tree["inputs"]), strict=True))
            case = Case(meta["function"], c["visibility"], c["dtype"], c["label"], c["index"], inputs)
            calls = tuple(
                Call(
                    cm["function"],
                    tuple(_to_torch(ct["args"])),
                    tuple(cm["grad_wrt"]),
                    _to_torch(ct["projection"]),
                )
                for cm, ct in zip(meta["calls"], tree["calls"], strict=True)
            )
            items.append(
                Prepared(
                    meta["function"], meta["check"], meta["kind"], case, calls, _to_numpy(tree["expected"])
                )
            )
    return CaseSet(plan, "public", tuple(items))


def _torch_free(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy()
    if isinstance(tree, tuple):
        return tuple(_torch_free(x) for x in tree)
    if isinstance(tree, list):
        return [_torch_free(x) for x in tree]
    if isinstance(tree, dict):
        return {k: _torch_free(v) for k, v in tree.items()}
    return tree


def _to_torch(tree: Any) -> Any:
    if isinstance(tree, wire.Received):
        return torch.from_numpy(tree.array)
    if isinstance(tree, tuple):
        return tuple(_to_torch(x) for x in tree)
    if isinstance(tree, list):
        return [_to_torch(x) for x in tree]
    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    return tree


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, wire.Received):
        return tree.array
    if isinstance(tree, tuple):
        return tuple(_to_numpy(x) for x in tree)
    if isinstance(tree, list):
        return [_to_numpy(x) for x in tree]
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return tree


def main(argv: list[str]) -> int:
    """python -m grader.cases build-public NAME [NAME ...]"""
    if len(argv) < 2 or argv[0] != "build-public":
        print("usage: python -m grader.cases build-public NAME [NAME ...]", file=sys.stderr)
        return 2
    for name in argv[1:]:
        print(write_public(load_plan(name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
