"""Static scan for banned APIs, in the trusted process (the worker's run-time tracer can be undone by
the student's own code; this scan cannot).

For every top-level function of the student's module, collect the dotted names it refers to (through
import aliases: `from torch import nn as n; n.LSTM` -> torch.nn.LSTM; assignments: `aten = torch.ops.aten`;
defaults of parameters; `getattr(x, "name")`; star imports), follow calls to the module's other functions,
and report which banned names each graded function reaches.

torch reaches one computation by many routes: F.scaled_dot_product_attention is also
torch._C._nn.scaled_dot_product_attention, torch.ops.aten.scaled_dot_product_attention(.default) and the
kernels behind it (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, ...). A ban on an op is a ban
on its `family`: its own name and the kernels in KERNELS, under every torch namespace. The worker's tracer
uses the same families at run time. A function with bans that reaches for what lies behind the tracer's
wrappers (__wrapped__, __closure__, the raw kernel of a torch.ops object, torch._ops, torch._C's operator
lookups) is reported as using torch internals that go around the ban checks.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Collection, Iterable, Sequence

_RNN_BACKENDS = ("_cudnn_rnn", "miopen_rnn", "mkldnn_rnn_layer", "_lstm_mps")

# A banned API's name -> the kernels that compute the same thing by another route (followed transitively).
# Only kernels whose use implies the API's computation: nll_loss is not in cross_entropy's family
# (log_softmax + nll_loss is a way to write the loss by hand where only cross_entropy is banned).
KERNELS: dict[str, tuple[str, ...]] = {
    "scaled_dot_product_attention": (
        "_scaled_dot_product_attention_math", "_scaled_dot_product_attention_math_for_mps",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable", "_flash_attention_forward",
        "_efficient_attention_forward", "_flash_attention_forward_no_dropout_inplace",
        "_triton_scaled_dot_attention",
    ),
    "MultiheadAttention": ("multi_head_attention_forward",),
    "multi_head_attention_forward": ("_native_multi_head_attention", "_triton_multi_head_attention"),
    "TransformerEncoderLayer": ("_transformer_encoder_layer_fwd",),
    "TransformerEncoder": ("_transformer_encoder_layer_fwd",),
    "CrossEntropyLoss": ("cross_entropy",),
    "cross_entropy": ("cross_entropy_loss",),
    "NLLLoss": ("nll_loss",),
    "nll_loss": ("nll_loss_nd", "nll_loss2d", "nll_loss_forward", "nll_loss2d_forward"),
    "LayerNorm": ("layer_norm",),
    "layer_norm": ("native_layer_norm",),
    "GroupNorm": ("group_norm",),
    "group_norm": ("native_group_norm",),
    "RMSNorm": ("rms_norm",),
    "rms_norm": ("_fused_rms_norm",),
    "RNN": ("rnn_tanh", "rnn_relu", *_RNN_BACKENDS),
    "LSTM": ("lstm", *_RNN_BACKENDS),
    "GRU": ("gru", *_RNN_BACKENDS),
    "RNNCell": ("rnn_tanh_cell", "rnn_relu_cell"),
    "LSTMCell": ("lstm_cell",),
    "GRUCell": ("gru_cell",),
    "lstm_cell": ("_thnn_fused_lstm_cell",),
    "gru_cell": ("_thnn_fused_gru_cell",),
    "_VF": ("rnn_tanh", "rnn_relu", "lstm", "gru", "rnn_tanh_cell", "rnn_relu_cell", "lstm_cell", "gru_cell"),
    "pack_padded_sequence": ("_pack_padded_sequence",),
    "pad_packed_sequence": ("_pad_packed_sequence",),
}  # fmt: skip
# Where torch keeps ops: a ban on <namespace>.<op> is a ban on the op (torch.layer_norm, F.layer_norm).
OP_NAMESPACES = frozenset({
    "torch", "torch.nn.functional", "torch._C._nn", "torch._C._VariableFunctions",
    "torch._C._VariableFunctionsClass", "torch._VF", "torch.ops.aten",
})  # fmt: skip
_MAX_HOPS, _MAX_PATHS, _MAX_PARTS = 8, 128, 64  # bounds on what hostile source can make the scan do
_ATEN_STRING = re.compile(r"^aten(?:::|\.)([A-Za-z_]\w*)")  # "aten::layer_norm", "aten.layer_norm.default"


@functools.cache
def family(banned: str) -> frozenset[str]:
    """The op names a ban covers under every torch namespace: its own leaf and the kernels that compute it.

    Empty for a ban that is not an op (torch.autograd.grad, torch.Tensor.backward, torch.nn.attention):
    those match by their dotted path only.
    """
    namespace, _, leaf = banned.rpartition(".")
    if leaf not in KERNELS and namespace not in OP_NAMESPACES:
        return frozenset()
    out: set[str] = set()
    todo = [leaf]
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(KERNELS.get(name, ()))
    return frozenset(out)


def ban_of_ops(ops: Collection[str], bans: Sequence[str]) -> str | None:
    """The ban that calling one of `ops` (op names) breaks, or None: a ban named after the op first
    (torch.ops.aten.layer_norm breaks F.layer_norm before nn.LayerNorm), else the first in `bans`."""
    hits = [b for b in bans if family(b) & set(ops)]
    named = [b for b in hits if b.rpartition(".")[2] in ops]
    return (named or hits or [None])[0]


def scan(source: str, functions: Iterable[str], banned: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """{function: [banned names it uses]} for the graded `functions`; {} if the source does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    nodes, inside = _walk(tree)
    defs = {n.name: n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    aliases = _aliases(nodes, set(defs))
    refs: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    module_torchy: set[str] | None = None  # names standing for torch objects (computed when first needed)
    for name, node in defs.items():
        names = set()
        called = set()
        done: set[str] = set()
        local_torchy: set[str] | None = None
        for sub in inside[node]:
            kind = type(sub)
            dotted = _dotted(sub) if kind in _CHAINS else None
            if dotted and dotted not in done:
                done.add(dotted)
                names.update(_resolve(dotted, aliases))
                if dotted.partition(".")[0] in defs:
                    called.add(dotted.partition(".")[0])
            if kind is ast.Attribute and sub.attr in ("backward", "_VF"):
                names.add(f"*.{sub.attr}")
            unwrapped = _unwrapping(sub, kind) if kind is ast.Attribute or kind is ast.Call else None
            if unwrapped is not None:
                if module_torchy is None:
                    module_torchy = _torch_names(_outside(nodes, inside), _torch_aliases(aliases))
                if local_torchy is None:
                    local_torchy = _torch_names(inside[node], module_torchy)
                if _rooted(unwrapped[1], local_torchy):
                    names.add(f"{_INTERNALS} (.{unwrapped[0]})")
            if kind is ast.Constant and isinstance(sub.value, str):
                m = _ATEN_STRING.match(sub.value)  # torch._C._get_operation_overload("aten::...", "")
                if m:
                    names.add(f"torch.ops.aten.{m.group(1)}")
        refs[name] = names
        calls[name] = called
    result: dict[str, list[str]] = {}
    for fn in functions:
        if fn not in defs:
            continue
        reach, todo = set(), [fn]
        while todo:
            f = todo.pop()
            if f in reach:
                continue
            reach.add(f)
            todo.extend(calls.get(f, ()))
        used = set().union(*(refs[f] for f in reach))
        hits = sorted(_hits(used, banned.get(fn, ())) or (_internals(used) if banned.get(fn) else ()))
        if hits:
            result[fn] = hits
    return result


# Routes around the worker's tracer (it wraps what torch's namespaces hold): the unwrapped function behind a
# wrapper, the raw kernel inside a torch.ops object, a torch.ops namespace of one's own. No solution needs them.
_UNWRAPPERS = frozenset({"__wrapped__", "__closure__", "_op", "_op_dk", "_handle"})
_INTERNAL_PATHS = ("torch._ops", "torch._C._get_operation_overload", "torch._C._jit_get_operation")
_INTERNALS = "torch internals that go around the ban checks"


def _torch_aliases(aliases: dict[str, set[str]]) -> set[str]:
    return {"torch"} | {
        n for n, paths in aliases.items() if any(p == "torch" or p.startswith("torch.") for p in paths)
    }


def _outside(nodes: list[ast.AST], inside: dict[ast.AST, list[ast.AST]]) -> list[ast.AST]:
    """The module's nodes that are in no function definition."""
    within = {id(n) for subtree in inside.values() for n in subtree}
    return [n for n in nodes if id(n) not in within]


def _internals(used: Iterable[str]) -> set[str]:
    """The uses of torch internals among `used` (reported as such when a function has bans)."""
    found = {u for u in used if u.startswith(_INTERNALS)}
    for u in used:
        path = next((p for p in _INTERNAL_PATHS if u == p or u.startswith(p + ".")), None)
        if path:
            found.add(f"{_INTERNALS} ({path})")
    return found


def _unwrapping(node: ast.AST, kind: type) -> tuple[str, ast.AST] | None:
    """(what is unwrapped, the expression it is taken from) for x.<unwrapper>, getattr(x, "<unwrapper>"[, d])
    and inspect.getclosurevars(x)."""
    if kind is ast.Attribute and node.attr in _UNWRAPPERS:  # type: ignore[attr-defined]
        return node.attr, node.value  # type: ignore[attr-defined]
    if kind is ast.Call and node.args:  # type: ignore[attr-defined]
        func, args = node.func, node.args  # type: ignore[attr-defined]
        if _is_name(func, "getattr") and len(args) >= 2 and _is_str(args[1]) and args[1].value in _UNWRAPPERS:
            return args[1].value, args[0]
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called == "getclosurevars":  # inspect.getclosurevars(f), or imported on its own
            return called, args[0]
    return None


def _rooted(node: ast.AST, torchy: set[str]) -> bool:
    """Whether the expression is taken from a torch object: a chain of attributes, subscripts, calls and
    getattr(...) that starts at a name standing for one (getattr(torch, n), F.layer_norm, k where
    k = torch.ops.aten.x). An object of the student's own built from torch values (Act(torch.tanh)) is not."""
    while True:
        if isinstance(node, ast.Name):
            return node.id in torchy
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.args[0] if _is_name(node.func, "getattr") and node.args else node.func
        else:
            return False


def _bindings(nodes: list[ast.AST]) -> list[tuple[str, ast.AST]]:
    """(name, expression bound to it) for the assignments among `nodes` (a = x; a, b = x, y; a: T = x;
    (a := x)) and the parameters with defaults of their functions and lambdas, in the nodes' order."""
    pairs: list[tuple[str, ast.AST]] = []
    for node in nodes:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    pairs.append((t.id, node.value))
                elif isinstance(t, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List)):
                    elts = zip(t.elts, node.value.elts, strict=False)
                    pairs += [(e.id, v) for e, v in elts if isinstance(e, ast.Name)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            with_default = positional[len(positional) - len(a.defaults) :]
            pairs += list(zip((p.arg for p in with_default), a.defaults, strict=True))
            pairs += [(p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
    return pairs


def _torch_names(scope: list[ast.AST], outer: set[str]) -> set[str]:
    """The names that stand for a torch object in a scope: those of the scope around it (`outer`), plus the
    names the scope binds to a torch-rooted expression, minus those it binds to anything else."""
    pairs = _bindings(scope)
    names = set(outer) - {name for name, _ in pairs}
    for _ in range(_MAX_HOPS):
        grown = {name for name, value in pairs if name not in names and _rooted(value, names)}
        if not grown:
            break
        names |= grown
    return names


def _hits(used: Iterable[str], bans: Sequence[str]) -> set[str]:
    """The bans `used` breaks: by dotted path (_matches), else as a route to a banned op (one ban per name)."""
    bans = tuple(bans)
    return set().union(*((_name_hits if len(u) <= 200 else _name_hits.__wrapped__)(u, bans) for u in used))


@functools.lru_cache(maxsize=1 << 14)  # a class's submissions share most names (x, torch.tanh, W_ih.T, ...);
def _name_hits(u: str, bans: tuple[str, ...]) -> frozenset[str]:  # short ones only are kept (< 7 MB in all)
    direct = [b for b in bans if _matches(u, b)]
    if direct:
        return frozenset(direct)
    parts = u.split(".")
    if parts[0] == "torch":  # torch.ops.aten.layer_norm.default, torch._C._nn.cross_entropy_loss, ...
        ban = ban_of_ops(parts[1:], bans)
        if ban:
            return frozenset((ban,))
    return frozenset()


def _aliases(nodes: list[ast.AST], defs: set[str]) -> dict[str, set[str]]:
    """{name: the torch paths it may stand for}, from imports and assignments anywhere in the module.

    `import torch.nn as tnn`, `from torch._C import _nn`, `aten = torch.ops.aten` (and chains of these),
    `def f(q, F=torch.nn.functional)`, and `from torch.nn.functional import *` for the names nothing else
    in the module defines. A name may stand for several paths: all count. `nodes`: the module's (_walk).
    """
    out: dict[str, set[str]] = {}
    stars: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                path = a.name if a.asname else a.name.split(".")[0]
                out.setdefault(a.asname or a.name.split(".")[0], set()).add(path)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                if a.name == "*":
                    stars.append(node.module)
                else:
                    out.setdefault(a.asname or a.name, set()).add(f"{node.module}.{a.name}")
    pairs = _bindings(nodes)
    torch_stars = [m for m in stars if m.split(".")[0] == "torch"]
    if torch_stars:
        defined = defs | set(out) | {n.arg for n in nodes if isinstance(n, ast.arg)}
        defined |= {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        for n in nodes:
            if isinstance(n, ast.Name) and n.id not in defined:
                out[n.id] = {f"{m}.{n.id}" for m in torch_stars}
    for _ in range(_MAX_HOPS):  # chains: a = torch.ops; b = a.aten (bounded: a = a.b grows forever)
        changed = False
        for name, value in pairs:
            dotted = _dotted(value)
            for path in _resolve(dotted, out) if dotted else ():
                known = out.setdefault(name, set())
                if path.split(".")[0] == "torch" and path not in known and len(known) < _MAX_PATHS:
                    known.add(path)
                    changed = True
        if not changed:
            break
    return out


def _resolve(dotted: str, aliases: dict[str, set[str]]) -> set[str]:
    """The paths `dotted` may stand for: through the aliases of its head, or itself."""
    head, _, rest = dotted.partition(".")
    tail = "." + rest if rest else ""
    return {p + tail for p in aliases.get(head, ())} or {dotted}


def _dotted(node: ast.AST) -> str | None:
    """a.b.c for an attribute chain; getattr(a.b, "c"), a.b.__getattr__("c") and a.b.__dict__["c"] too."""
    parts: list[str] = []
    while len(parts) <= _MAX_PARTS:  # a longer chain is no torch path; its inner links are scanned anyway
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call) and len(node.args) >= 2 and _is_name(node.func, "getattr"):
            if not _is_str(node.args[1]):
                return None
            parts.append(node.args[1].value)
            node = node.args[0]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("__getattr__", "__getattribute__")
            and len(node.args) == 1
        ):
            if not _is_str(node.args[0]):
                return None
            parts.append(node.args[0].value)
            node = node.func.value
        elif isinstance(node, ast.Subscript) and _is_str(node.slice):
            key, base = node.slice.value, node.value
            if isinstance(base, ast.Attribute) and base.attr == "__dict__":
                node = base.value
            elif isinstance(base, ast.Call) and _is_name(base.func, "vars") and len(base.args) == 1:
                node = base.args[0]
            else:
                return None
            parts.append(key)
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        else:
            return None
    return None


def _matches(used: str, banned: str) -> bool:
    """torch.nn.LSTM matches torch.nn.LSTM, torch.nn.modules.rnn.LSTM (same leaf under torch.nn), nn.LSTM."""
    if used == banned or used.startswith(banned + "."):
        return True
    if used.startswith("*."):  # attribute on anything: x.backward(), torch._VF via getattr chains
        leaf = used[2:]
        return banned.endswith("." + leaf) and banned in ("torch.Tensor.backward", "torch._VF")
    b_parts, u_parts = banned.split("."), used.split(".")
    if u_parts[-1] != b_parts[-1]:
        return any(p == b_parts[-1] for p in u_parts) and banned == "torch._VF" and "_VF" in u_parts
    # same leaf: accept when the rest of the used path is a plausible re-export (torch.nn.modules.rnn.LSTM)
    return u_parts[0] == b_parts[0] and len(b_parts) >= 2 and b_parts[-2] in u_parts


_CHAINS = (ast.Attribute, ast.Call, ast.Subscript, ast.Name)  # the nodes _dotted can read a name from
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _walk(tree: ast.AST) -> tuple[list[ast.AST], dict[ast.AST, list[ast.AST]]]:
    """ast.walk's nodes, in its (breadth-first) order, as a list (a third of its time), and for each
    function definition the nodes of its subtree, itself included (nested definitions' too). Load/Store
    markers are left out: no name is read from them."""
    out = [tree]
    owners: list[tuple[ast.AST, ...]] = [()]  # the definitions each node is inside
    inside: dict[ast.AST, list[ast.AST]] = {}
    i = 0
    while i < len(out):
        n, own = out[i], owners[i]
        i += 1
        for d in own:
            inside[d].append(n)
        if isinstance(n, _DEFS):
            inside[n] = [n]
            own = (*own, n)
        for f in n._fields:
            if f == "ctx":
                continue
            v = getattr(n, f, None)
            if isinstance(v, ast.AST):
                out.append(v)
                owners.append(own)
            elif isinstance(v, list):
                children = [x for x in v if isinstance(x, ast.AST)]
                out += children
                owners += [own] * len(children)
    return out, inside


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)
