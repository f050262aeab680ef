"""Static scan for banned APIs, in the trusted process (the worker's run-time tracer can be undone by
the student's own code; this scan cannot).

For every top-level function of the student's module, collect the dotted names it refers to (through
import aliases: `from torch import nn as n; n.LSTM` -> torch.nn.LSTM), follow calls to the module's
other functions, and report which banned names each graded function reaches.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable


def scan(source: str, functions: Iterable[str], banned: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """{function: [banned names it uses]} for the graded `functions`; {} if the source does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    aliases = _aliases(tree)
    defs = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    refs: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name, node in defs.items():
        local_aliases = dict(aliases)
        local_aliases.update(_aliases(node))
        names = set()
        called = set()
        for sub in ast.walk(node):
            dotted = _dotted(sub)
            if dotted:
                head, _, rest = dotted.partition(".")
                full = local_aliases.get(head, head) + ("." + rest if rest else "")
                names.add(full)
                if head in defs:
                    called.add(head)
            if isinstance(sub, ast.Attribute) and sub.attr in ("backward", "_VF"):
                names.add(f"*.{sub.attr}")
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
        hits = sorted({b for b in banned.get(fn, ()) for u in used if _matches(u, b)})
        if hits:
            result[fn] = hits
    return result


def _aliases(tree: ast.AST) -> dict[str, str]:
    out: dict[str, str] = {}
    body = tree.body if isinstance(tree, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)) else []
    for node in ast.walk(tree) if isinstance(tree, ast.Module) else body:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
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
