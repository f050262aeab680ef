"""On-disk cache of prepared case sets, so reference outputs are computed once, not on every run.

Trusted process only: the cache holds hidden inputs and expected outputs, so it lives under
./.seqgrade/cache/ (a 0700 folder, 0600 files, next to the secret) and is read after the zygote has
forked. No worker is ever given a path to it or a byte of it.

    key(plan, visibility, secret)                 -> str      what decides the cases, hashed
    load_or_build(plan, visibility, secret, ...)  -> (CaseSet, "hit" | "built" | "uncached: why")
    encode(case_set) -> bytes, decode(plan, data) -> CaseSet   (also how grader.distributed ships cases)

The key hashes the source of every module that can change a case (the plan module and what it imports
from assignments/, the reference modules, the check kinds' modules, grader.cases/checks/plan/wire and
what they import inside the repo), the grader, torch and numpy versions, the plan name, the visibility
and the secret's fingerprint. Changing any of them is a miss and a rebuild; the stale file is removed.

File format (grader.wire, never pickle):

    MAGIC (8 bytes) | HMAC-SHA256(secret, body) (32 bytes) | body
    body = count (4 bytes) + count x [length (8 bytes) + one wire message per Prepared item]

The HMAC makes a tampered or truncated file a miss rather than a wrong grade.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import importlib.util
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grader import __version__, wire
from grader import cases as cases_mod
from grader.cases import CaseSet, Prepared
from grader.plan import Call, Case, Plan

MAGIC = b"SQGCASE1"
DEFAULT_ROOT = Path(".seqgrade") / "cache"
REPO_ROOT = Path(__file__).resolve().parent.parent
OWN_PACKAGES = ("assignments", "reference", "grader")
_COUNT = struct.Struct("!I")
_LEN = struct.Struct("!Q")


# ----------------------------------------------------------------------------------------------- the key


def key(plan: Plan, visibility: str, secret: bytes | None) -> str:
    """A hex digest of everything that decides `plan`'s prepared cases for `visibility`."""
    h = hashlib.sha256(b"seqgrade-case-cache-v1\0")
    for part in (
        __version__,
        torch.__version__,
        np.__version__,
        plan.name,
        visibility,
        cases_mod.fingerprint(secret) if secret is not None else "-",
    ):
        h.update(str(part).encode() + b"\0")
    for name, digest in source_digests(plan):
        h.update(f"{name}={digest}\0".encode())
    return h.hexdigest()


def source_digests(plan: Plan) -> list[tuple[str, str]]:
    """(module, sha256 of its source) for every repo module that can change `plan`'s cases, sorted."""
    roots = {f"assignments.{plan.name}.plan", "grader.cases", "grader.checks", "grader.plan", "grader.wire"}
    for fn in plan.functions:
        roots.add(getattr(fn.make_inputs, "__module__", "") or "")
        path = fn.reference or f"{plan.reference or 'reference.' + plan.name}:{fn.name}"
        roots.add(path.partition(":")[0])
        for check in fn.checks:
            roots.update(c.__module__ for c in type(check).__mro__ if c is not object)
    seen: dict[str, str] = {}
    todo = sorted(r for r in roots if r)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        origin = _origin(name)
        if origin is None:  # not ours (torch, numpy...) or not a module: the versions above cover it
            continue
        source = origin.read_bytes()
        seen[name] = hashlib.sha256(source).hexdigest()
        todo.extend(m for m in _imports(name, source, origin) if m not in seen)
    return sorted(seen.items())


def _origin(name: str) -> Path | None:
    if name.split(".")[0] not in OWN_PACKAGES:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin).resolve()
    return path if path.is_relative_to(REPO_ROOT) else None


def _imports(name: str, source: bytes, origin: Path) -> list[str]:
    """Modules of our packages that `name` imports (absolute and relative; `from pkg import mod` too)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    package = name if origin.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out.extend(f"{mod}.{a.name}" for a in node.names)  # submodules; non-modules are skipped later
    return [m for m in out if m.split(".")[0] in OWN_PACKAGES]


# ----------------------------------------------------------------------------------------------- load / store


def load_or_build(
    plan: Plan, visibility: str, secret: bytes | None, *, root: Path | None = None
) -> tuple[CaseSet, str]:
    """The prepared CaseSet, from the cache when its key matches, else built (and stored)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    k = key(plan, visibility, secret)
    path = root / f"{plan.name}-{visibility}-{k[:32]}.cases"
    mac_key = _mac_key(secret)
    if path.is_file():
        try:
            cs = decode(plan, _unseal(path.read_bytes(), mac_key))
            return cs, "hit"
        except (ValueError, wire.BadReply, KeyError, TypeError, IndexError, struct.error):
            pass  # corrupt, truncated or forged: rebuild below
    cs = cases_mod.build(plan, visibility, secret)
    data = encode(cs)
    why = _unfaithful(cs, decode(plan, data))
    if why:
        return cs, f"uncached: {why}"
    _store(root, path, _seal(data, mac_key), stale_prefix=f"{plan.name}-{visibility}-")
    return cs, "built"


def _mac_key(secret: bytes | None) -> bytes:
    return hmac.new(secret or b"seqgrade-public", b"seqgrade-case-cache-mac", hashlib.sha256).digest()


def _seal(body: bytes, mac_key: bytes) -> bytes:
    return MAGIC + hmac.new(mac_key, body, hashlib.sha256).digest() + body


def _unseal(data: bytes, mac_key: bytes) -> bytes:
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("not a seqgrade case cache")
    mac, body = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
    if not hmac.compare_digest(mac, hmac.new(mac_key, body, hashlib.sha256).digest()):
        raise ValueError("cache file fails its integrity check")
    return body


def _store(root: Path, path: Path, data: bytes, *, stale_prefix: str) -> None:
    """Write atomically, 0600 in a 0700 folder; drop older entries of the same plan and visibility."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    ignore = root.parent / ".gitignore"
    if root.parent.name == ".seqgrade" and not ignore.exists():
        ignore.write_text("*\n")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=root)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in root.glob(f"{stale_prefix}*.cases"):
        if old != path:
            old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- encoding


def encode(cs: CaseSet) -> bytes:
    """A CaseSet as bytes: one grader.wire message per Prepared item (inputs, calls, expected)."""
    parts = [_COUNT.pack(len(cs.items))]
    for p in cs.items:
        meta = {
            "visibility": cs.visibility,
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
        msg = wire.encode(meta, tree)
        parts.append(_LEN.pack(len(msg)) + msg)
    return b"".join(parts)


def decode(plan: Plan, data: bytes) -> CaseSet:
    """The inverse of encode: inputs and call arguments as torch tensors, expected values as numpy."""
    (count,) = _COUNT.unpack_from(data, 0)
    pos = _COUNT.size
    items = []
    visibility = "hidden"
    for _ in range(count):
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        msg = data[pos : pos + n]
        pos += n
        if len(msg) != n:
            raise ValueError("truncated case set")
        jlen, _ = wire.HEADER.unpack_from(msg, 0)
        meta, tree = wire.decode(
            msg[wire.HEADER.size : wire.HEADER.size + jlen], msg[wire.HEADER.size + jlen :]
        )
        visibility = meta["visibility"]
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
            Prepared(meta["function"], meta["check"], meta["kind"], case, calls, _to_numpy(tree["expected"]))
        )
    if pos != len(data):
        raise ValueError("trailing bytes after the case set")
    return CaseSet(plan, visibility, tuple(items))


def _to_torch(tree: Any) -> Any:
    if isinstance(tree, wire.Received):
        return torch.from_numpy(tree.array)
    return _map(tree, _to_torch)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, wire.Received):
        return tree.array
    return _map(tree, _to_numpy)


def _map(tree: Any, f: Any) -> Any:
    if isinstance(tree, tuple):
        return tuple(f(x) for x in tree)
    if isinstance(tree, list):
        return [f(x) for x in tree]
    if isinstance(tree, dict):
        return {k: f(v) for k, v in tree.items()}
    return tree


# ----------------------------------------------------------------------------------------------- faithfulness


def _unfaithful(built: CaseSet, loaded: CaseSet) -> str:
    """'' if `loaded` grades exactly like `built`; else what the wire format could not carry."""
    if len(built.items) != len(loaded.items):
        return "item count differs"
    for a, b in zip(built.items, loaded.items, strict=True):
        where = f"{a.function} ({a.case.title})"
        if (
            a.function,
            a.check,
            a.kind,
            a.case.function,
            a.case.visibility,
            a.case.dtype,
            a.case.label,
            a.case.index,
        ) != (
            b.function,
            b.check,
            b.kind,
            b.case.function,
            b.case.visibility,
            b.case.dtype,
            b.case.label,
            b.case.index,
        ):
            return f"{where}: case metadata differs"
        trees = [(dict(a.case.inputs), dict(b.case.inputs)), (a.expected, b.expected)]
        for ca, cb in zip(a.calls, b.calls, strict=True):
            if (ca.function, tuple(ca.grad_wrt)) != (cb.function, tuple(cb.grad_wrt)):
                return f"{where}: call differs"
            trees += [(ca.args, cb.args), (ca.projection, cb.projection)]
        for ta, tb in trees:
            why = _same(ta, tb)
            if why:
                return f"{where}: {why}"
    return ""


def _same(a: Any, b: Any) -> str:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return f"tensor {a.dtype} {tuple(a.shape)} does not survive the wire format"
        return "" if torch.equal(a.detach(), b) or a.isnan().any() else "tensor values differ"
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.dtype != b.dtype or a.shape != b.shape:
            return f"array {a.dtype} {a.shape} does not survive the wire format"
        return "" if a.tobytes() == b.tobytes() else "array values differ"
    if isinstance(a, (tuple, list)):
        if type(a) is not type(b) or len(a) != len(b):
            return f"a {type(a).__name__} of {len(a)} does not survive the wire format"
        return next((w for w in (_same(x, y) for x, y in zip(a, b, strict=True)) if w), "")
    if isinstance(a, dict):
        if not isinstance(b, dict) or list(a) != list(b):
            return "a dict does not survive the wire format"
        return next((w for w in (_same(a[k], b[k]) for k in a) if w), "")
    if a is None or isinstance(a, (bool, int, float, str, np.generic)):
        same_kind = type(b) is type(a) or (isinstance(a, np.generic) and type(b) in (bool, int, float))
        equal = a == b or (isinstance(a, float) and a != a and b != b)
        return "" if same_kind and equal else f"a {type(a).__name__} value does not survive the wire format"
    return f"a {type(a).__name__} cannot be stored"
