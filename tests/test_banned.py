"""Banned APIs: the static scan (trusted side: aliases, helpers, attribution to the right function, every route
to a banned op, no false positives on ordinary tensor code), and real bypass submissions graded on the hidden
cases, caught by the scan and/or the worker's tracer, with the correct examples of every assignment clean."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from grader.banned import family, scan
from grader.plan import available, load_plan
from tests.conftest import describe, entries, lost_functions

BANS = (
    "torch.nn.LSTM",
    "torch.nn.RNN",
    "torch._VF",
    "torch.lstm_cell",
    "torch.Tensor.backward",
    "torch.autograd.grad",
)


def bans(*fns):
    return {f: BANS for f in fns}


def test_direct_alias_and_from_imports():
    src = """
import torch
import torch.nn as tnn
from torch.nn import LSTM as L
from torch import _VF

def a(x):
    return torch.nn.LSTM(3, 4)(x)

def b(x):
    return tnn.RNN(3, 4)(x)

def c(x):
    return L(3, 4)(x)

def d(x):
    return _VF.lstm_cell(x)

def e(x):
    return torch.tanh(x)
"""
    out = scan(src, ["a", "b", "c", "d", "e"], bans("a", "b", "c", "d", "e"))
    assert out == {
        "a": ["torch.nn.LSTM"],
        "b": ["torch.nn.RNN"],
        "c": ["torch.nn.LSTM"],
        "d": ["torch._VF", "torch.lstm_cell"],
    }


def test_helpers_are_followed_and_attribution_is_per_function():
    src = """
import torch

def helper(x):
    return torch.lstm_cell(x)

def graded(x):
    return helper(x)

def innocent(x):
    return x * 2
"""
    out = scan(src, ["graded", "innocent"], bans("graded", "innocent"))
    assert out == {"graded": ["torch.lstm_cell"]}


def test_backward_and_autograd_only_where_banned():
    src = """
import torch

def rnn_backward(x):
    y = (x ** 2).sum()
    y.backward()
    return x.grad

def rnn_forward(x):
    return torch.autograd.grad(x.sum(), [x])
"""
    out = scan(src, ["rnn_backward", "rnn_forward"], {"rnn_backward": BANS, "rnn_forward": ()})
    assert out == {"rnn_backward": ["torch.Tensor.backward"]}


def test_unparsable_source_scans_nothing():
    assert scan("def (", ["a"], bans("a")) == {}


# ------------------------------------------------------------------------------------- routes to an op

ROUTES = (  # the kernel namespaces torch reaches one op through, spelled the ways a student may write them
    "import torch\n{call}",
    "import torch.nn.functional as F\n{call}",
    "from torch.nn import functional as F\n{call}",
    "import torch\nF = torch.nn.functional\n{call}",
    "import torch\nfrom torch.ops import aten\n{call}",
    "import torch\naten = torch.ops.aten\n{call}",
    "import torch\nops = torch.ops\naten = ops.aten\n{call}",
    "import torch\nfrom torch._C import _nn\n{call}",
    "import torch._C._nn as _nn\n{call}",
)


def flagged(body: str, bans: tuple[str, ...], fn: str = "f") -> list[str]:
    return scan(body, [fn], {fn: bans}).get(fn, [])


def routes(call: str) -> list[str]:
    """`call` in a function, under every import in ROUTES that binds the name it starts with."""
    head = re.match(r"(?:\w+\()*(\w+)", call).group(1)  # getattr(getattr(torch, ...: torch
    bound = [r for r in ROUTES if re.search(rf"(import|as) {head}\n|^{head} =", r, flags=re.M)]
    assert bound, call
    return [r.format(call=f"def f(q, k, v, x, t):\n    return {call}\n") for r in bound]


SDPA = ("torch.nn.functional.scaled_dot_product_attention",)
CE = ("torch.nn.functional.cross_entropy",)


@pytest.mark.parametrize(
    "call",
    [
        "torch.ops.aten.scaled_dot_product_attention(q, k, v)",
        "torch.ops.aten.scaled_dot_product_attention.default(q, k, v)",
        "torch._ops.ops.aten.scaled_dot_product_attention(q, k, v)",
        "torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0]",
        "torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]",
        "torch.ops.aten._scaled_dot_product_efficient_attention.default(q, k, v, None, False)[0]",
        "torch._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]",
        "torch._C._nn.scaled_dot_product_attention(q, k, v)",
        "torch._C._VariableFunctions._scaled_dot_product_attention_math(q, k, v)[0]",
        "torch.nn.functional.scaled_dot_product_attention(q, k, v)",
        "F.scaled_dot_product_attention(q, k, v)",
        "aten.scaled_dot_product_attention.default(q, k, v)",
        "_nn.scaled_dot_product_attention(q, k, v)",
        "getattr(torch.ops.aten, 'scaled_dot_product_attention')(q, k, v)",
        "getattr(getattr(torch, 'ops').aten, '_scaled_dot_product_attention_math')(q, k, v)[0]",
        "torch.ops.aten.__getattr__('scaled_dot_product_attention')(q, k, v)",
        "torch._C._nn.__dict__['scaled_dot_product_attention'](q, k, v)",
        "vars(torch._C._nn)['scaled_dot_product_attention'](q, k, v)",
        "F.scaled_dot_product_attention.__wrapped__(q, k, v)",
        "torch._C._get_operation_overload('aten::scaled_dot_product_attention', '')[0](q, k, v)",
    ],
)
def test_every_route_to_a_banned_attention_is_caught(call):
    for src in routes(call):
        assert flagged(src, SDPA) == list(SDPA), src


@pytest.mark.parametrize(
    "call",
    [
        "torch._C._nn.cross_entropy_loss(x, t)",
        "torch.ops.aten.cross_entropy_loss.default(x, t)",
        "F.cross_entropy(x, t)",
        "_nn.cross_entropy_loss(x, t)",
        "aten.cross_entropy_loss(x, t)",
        "torch.nn.CrossEntropyLoss()(x, t)",
    ],
)
def test_every_route_to_a_banned_cross_entropy_is_caught(call):
    for src in routes(call):
        assert flagged(src, CE + ("torch.nn.CrossEntropyLoss",)), src


@pytest.mark.parametrize(
    ("bans", "call"),
    [
        (("torch.nn.LayerNorm",), "torch.layer_norm(x, (4,))"),
        (("torch.nn.LayerNorm",), "torch.ops.aten.layer_norm.default(x, [4])"),
        (("torch.nn.LayerNorm",), "torch.native_layer_norm(x, (4,), None, None, 1e-5)[0]"),
        (("torch.nn.LayerNorm",), "F.layer_norm(x, (4,))"),
        (
            ("torch.nn.functional.layer_norm",),
            "torch.ops.aten.native_layer_norm(x, [4], None, None, 1e-5)[0]",
        ),
        (("torch.nn.MultiheadAttention",), "F.multi_head_attention_forward(q, k, v)"),
        (("torch.nn.MultiheadAttention",), "torch._native_multi_head_attention(q, k, v)"),
        (("torch.nn.LSTMCell",), "torch.ops.aten.lstm_cell.default(x, [q, k], v, v)"),
        (("torch.nn.GRUCell",), "torch.ops.aten.gru_cell(x, q, v, v)"),
        (("torch.gru_cell",), "torch._C._VariableFunctions.gru_cell(x, q, v, v)"),
        (("torch._VF",), "torch.ops.aten.rnn_tanh_cell.default(x, q, v, v)"),
        (("torch.nn.functional.nll_loss",), "torch._C._nn.nll_loss_nd(x, t)"),
        (("torch.nn.functional.nll_loss",), "torch.ops.aten.nll_loss2d(x, t)"),
        (("torch.nn.utils.rnn.pack_padded_sequence",), "torch._pack_padded_sequence(x, t, True)"),
    ],
)
def test_a_ban_covers_the_kernels_behind_it(bans, call):
    for src in routes(call):
        assert flagged(src, bans) == list(bans), src


def test_a_route_is_reported_as_the_ban_named_after_its_op():
    src = "import torch\ndef f(x):\n    return torch.ops.aten.native_layer_norm.default(x, [4], None, None, 1e-5)\n"
    norm = ("torch.nn.LayerNorm", "torch.nn.functional.layer_norm", "torch.native_layer_norm")
    assert flagged(src, norm) == ["torch.native_layer_norm"]
    src = "import torch\ndef f(q):\n    return torch.ops.aten.scaled_dot_product_attention(q, q, q)\n"
    assert flagged(src, ("torch._scaled_dot_product_attention_math", *SDPA)) == list(SDPA)


def test_star_imports_and_parameter_defaults_are_followed():
    src = """
import torch
from torch.nn.functional import *

def layer_norm(x, w, b):  # the student's own: not F.layer_norm
    return x

def f(x):
    return layer_norm(x, 1, 0) + scaled_dot_product_attention(x, x, x)

def g(x, kernels=torch.ops.aten):
    return kernels.scaled_dot_product_attention(x, x, x)

def h(x):
    return layer_norm(x, 1, 0)
"""
    bans = SDPA + ("torch.nn.functional.layer_norm",)
    assert scan(src, ["f", "g", "h"], {"f": bans, "g": bans, "h": bans}) == {"f": list(SDPA), "g": list(SDPA)}


@pytest.mark.parametrize(
    ("bans", "body"),
    [
        (
            SDPA,
            "s = (q @ k.transpose(-2, -1)).masked_fill(~x, float('-inf'))\n    return torch.softmax(s, -1) @ v",
        ),
        (SDPA, "return F.softmax(q @ k.mT, dim=-1) @ v, torch.matmul(q, k), torch.baddbmm(q, k, v)"),
        (CE, "return -torch.gather(F.log_softmax(x, -1), 1, t[:, None]).mean()"),
        (CE, "return F.nll_loss(torch.log_softmax(x, -1), t)"),  # log_softmax + nll: allowed where only CE is
        (("torch.nn.LayerNorm",), "return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1) + 1e-5)"),
        (("torch.autograd.functional",), "return torch.nn.functional.tanh(x) + F.sigmoid(x)"),
        (("torch.autograd.grad", "torch.Tensor.backward"), "return x.grad, torch.func.functional_call"),
        (("torch.nn.attention", *SDPA), "return torch.nn.functional.softmax(q, -1), F.dropout(q, 0.0)"),
        (("torch.nn.utils.rnn",), "return torch.nn.functional.pad(x, (0, 1)), torch.flip(x, [1])"),
    ],
)
def test_ordinary_tensor_ops_are_not_flagged(bans, body):
    for route in ROUTES:
        src = route.format(call=f"def f(q, k, v, x, t):\n    {body}\n")
        assert flagged(src, bans) == [], src


def test_own_functions_named_like_banned_ops_are_not_flagged():
    src = """
import torch
import torch.nn.functional as F

def scaled_dot_product_attention(q, k, v, mask=None):
    return torch.softmax(q @ k.mT, -1) @ v

def gru_cell(x, h):
    return torch.tanh(x + h)

def f(q):
    return scaled_dot_product_attention(q, q, q), gru_cell(q, q)
"""
    bans = SDPA + ("torch.gru_cell", "torch.nn.GRUCell", "torch._VF")
    assert scan(src, ["f", "scaled_dot_product_attention", "gru_cell"], dict.fromkeys(["f"], bans)) == {}


def test_families():
    assert family("torch.nn.functional.cross_entropy") == {"cross_entropy", "cross_entropy_loss"}
    assert "nll_loss" not in family("torch.nn.functional.cross_entropy")  # log_softmax + nll_loss by hand
    assert {"_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention"} <= family(
        "torch.nn.functional.scaled_dot_product_attention"
    )
    assert {"layer_norm", "native_layer_norm"} <= family("torch.nn.LayerNorm")
    for not_an_op in (
        "torch.autograd.functional",
        "torch.Tensor.backward",
        "torch.nn.attention",
        "torch.nn.utils.rnn",
    ):
        assert family(not_an_op) == frozenset()


# --------------------------------------------------------------------- graded: the source and the worker

SUBMISSIONS = Path(__file__).resolve().parent / "submissions"
ROOT = SUBMISSIONS.parent.parent
ATTN, MHA, BLOCK, GPT = "scaled_dot_product_attention", "causal_self_attention", "gpt_block", "gpt_forward"
INTERNALS = "torch internals that go around the ban checks"
F_SDPA = "torch.nn.functional.scaled_dot_product_attention"

KERNEL_ALIASES = {
    **dict.fromkeys((ATTN, MHA), ["torch._C._nn.scaled_dot_product_attention"]),
    "layer_norm": ["torch.native_layer_norm"],
    **dict.fromkeys((BLOCK, GPT), ["torch._C._nn.scaled_dot_product_attention", "torch.native_layer_norm"]),
}
# file -> (what the source scan reports, what the worker's tracer records): {function: [bans]}. Every function
# named in either loses all its points; every other function keeps them. (transformer_bans/ is not
# tests/submissions/transformer/, whose every file tests/test_grade_transformer.py must list.)
BYPASSES: dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]] = {
    "transformer_bans/ban_aten_sdpa": (
        dict.fromkeys((ATTN, MHA, BLOCK, GPT), [F_SDPA]),
        dict.fromkeys((ATTN, MHA, BLOCK, GPT), [F_SDPA]),
    ),
    # the worker wraps torch._C._nn.scaled_dot_product_attention itself: cnn.<op> is that wrapper
    "transformer_bans/ban_kernel_aliases": (KERNEL_ALIASES, KERNEL_ALIASES),
    "transformer_bans/ban_runtime_names": (
        {},
        {
            **dict.fromkeys((ATTN, MHA), ["torch._scaled_dot_product_attention_math"]),
            "layer_norm": ["torch.nn.functional.layer_norm"],
            **dict.fromkeys(
                (BLOCK, GPT), ["torch._scaled_dot_product_attention_math", "torch.nn.functional.layer_norm"]
            ),
        },
    ),
    # ... and unwrapped: the tracer sees only the layer-norm wrapper that has nothing to unwrap; the scan
    # reports the unwrapping in every function that reaches it
    "transformer_bans/ban_unwrapped": (
        {
            **dict.fromkeys((ATTN, MHA), [f"{INTERNALS} (._op)"]),
            "layer_norm": [f"{INTERNALS} (.__wrapped__)"],
            **dict.fromkeys((BLOCK, GPT), [f"{INTERNALS} (.__wrapped__)", f"{INTERNALS} (._op)"]),
        },
        {**dict.fromkeys(("layer_norm", BLOCK, GPT), ["torch.layer_norm"])},
    ),
    "seq2seq/ban_c_nn_cross_entropy": (
        {"sequence_loss": ["torch.nn.functional.cross_entropy"]},
        {"sequence_loss": ["torch.nn.functional.cross_entropy"]},
    ),
    "seq2seq/ban_runtime_nll": ({}, {"sequence_loss": ["torch.nn.functional.nll_loss"]}),
    "gated/ban_aten_cells": (
        dict.fromkeys(("lstm_step", "lstm_forward"), ["torch.lstm_cell"]),
        {
            **dict.fromkeys(("lstm_step", "lstm_forward"), ["torch.lstm_cell"]),
            **dict.fromkeys(("gru_step", "gru_forward"), ["torch.gru_cell"]),
        },
    ),
}


def test_every_bypass_file_has_an_expectation():
    files = {p.relative_to(SUBMISSIONS).with_suffix("").as_posix() for p in SUBMISSIONS.glob("*/ban_*.py")}
    assert files == set(BYPASSES)


def _assignment(name: str) -> str:
    return name.split("/")[0].removesuffix("_bans")


def _run(zygote, hidden_cases, name: str) -> dict[str, list[str]]:
    """{function: [bans the worker's tracer recorded]} on the hidden cases."""
    from grader.loader import discover
    from grader.runner import RunOptions, run_submission

    assignment = _assignment(name)
    plan, cases = load_plan(assignment), hidden_cases(assignment)
    with tempfile.TemporaryDirectory() as tmp:
        (sub,) = discover(SUBMISSIONS / f"{name}.py", plan.module, workdir=Path(tmp))
        run = run_submission(zygote, plan, cases, sub, RunOptions(timeout=5.0))
    assert not run.import_error, run.import_error
    seen: dict[str, set[str]] = {}
    for i, replies in run.replies.items():
        for r in replies:
            assert r.failure is None, f"{cases.items[i].function}: {r.failure} {r.error}"
            if r.banned:
                seen.setdefault(cases.items[i].function, set()).update(r.banned)
    return {fn: sorted(b) for fn, b in seen.items()}


def _static(name: str) -> dict[str, list[str]]:
    plan = load_plan(_assignment(name))
    bans = {fn.name: tuple(plan.banned) + tuple(fn.banned) for fn in plan.functions}
    return scan((SUBMISSIONS / f"{name}.py").read_text(), [f.name for f in plan.functions], bans)


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_bypass_is_seen_in_the_source(name):
    assert _static(name) == BYPASSES[name][0]


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_bypass_is_seen_by_the_worker(zygote, hidden_cases, name):
    assert _run(zygote, hidden_cases, name) == BYPASSES[name][1]


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_bypass_forfeits_the_functions_points_and_nothing_else(grade_hidden, name):
    static, runtime = BYPASSES[name]
    r = grade_hidden(_assignment(name), SUBMISSIONS / f"{name}.py")
    why = describe(r)
    assert not r.import_error, why
    assert lost_functions(r) == set(static) | set(runtime), why
    for fn, (score, _) in r.functions.items():
        if fn in static or fn in runtime:
            assert score == 0.0, why
            (entry,) = entries(r, f"{fn}: banned APIs")
            uses = sorted(set(static.get(fn, [])) | set(runtime.get(fn, [])))
            assert f"{fn} uses {', '.join(uses)}, which this assignment bans" in entry.message, why
    # the values are right: the ban alone costs the points
    assert all(t.passed for t in r.tests if t.kind != "banned"), why


# --------------------------------------------------------------------- correct examples stay clean


def _example(assignment: str) -> Path:
    folder = ROOT / "examples" / assignment
    return folder / "correct.py" if (folder / "correct.py").is_file() else folder / "correct"


@pytest.mark.parametrize("assignment", available())
def test_correct_examples_are_not_flagged(grade_hidden, assignment):
    plan = load_plan(assignment)
    path = _example(assignment)
    source = path if path.is_file() else path / f"{plan.module}.py"
    bans = {fn.name: tuple(plan.banned) + tuple(fn.banned) for fn in plan.functions}
    assert scan(source.read_text(), [f.name for f in plan.functions], bans) == {}
    if not any(bans.values()):
        return  # nothing to flag: the worker traces nothing either
    r = grade_hidden(assignment, path)
    assert not r.import_error, describe(r)
    assert not [t for t in r.tests if t.kind == "banned"], describe(r)


def test_hostile_aliases_and_chains_end_quickly():
    """The scan runs in the grading process: self-referring aliases and long chains must not hang it."""
    src = "import torch\na = torch.ops\na = a.aten\nb = a\na = b.a\ndef f(x):\n    return a.lstm_cell(x)\n"
    assert scan(src, ["f"], {"f": ("torch.lstm_cell",)}) == {"f": ["torch.lstm_cell"]}
    src = "import torch\ndef f(x):\n    return torch.ops.aten.lstm_cell" + ".b" * 2000 + "\n"
    assert scan(src, ["f"], {"f": ("torch.lstm_cell",)}) == {"f": ["torch.lstm_cell"]}


def test_the_tracer_sees_every_route_to_a_banned_op_and_leaves_other_calls_alone():
    """In a fresh interpreter (install() patches torch for good): each route to a banned op records the
    ban, inside a student's function only; ordinary torch calls run untouched, with no TorchFunctionMode
    (one on every call cost 1.3 us each, 4-8 ms of a gated submission)."""
    import subprocess
    import sys

    code = """
import torch
from grader import banned, worker
from grader.plan import load_plan
def bans_of(name):
    plan = load_plan(name)
    return sorted(set(plan.banned) | {b for f in plan.functions for b in f.banned})
worker.Tracer().install(bans_of("gated"))  # as an init does; then a worker whose bans differ installs its own
bans = bans_of("transformer")
tracer = worker.Tracer()
tracer.install(bans)
x = torch.randn(2, 3, 4)
ln = torch.nn.LayerNorm(4)  # built outside any student function: nothing recorded yet
routes = {
    "vf": lambda: torch._VF.layer_norm(x, (4,)),
    "variable_functions": lambda: getattr(torch._C._VariableFunctions, "layer" + "_norm")(x, (4,)),
    "variable_functions_class": lambda: torch._C._VariableFunctionsClass.native_layer_norm(x, (4,), None, None, 1e-5),
    "aten_packet": lambda: torch.ops.aten.layer_norm(x, [4]),
    "aten_overload": lambda: getattr(torch.ops.aten, "native_layer" + "_norm").default(x, [4], None, None, 1e-5),
    "c_nn": lambda: torch._C._nn.scaled_dot_product_attention(x, x, x),
    "aten_math": lambda: torch.ops.aten._scaled_dot_product_attention_math(x, x, x),
    "module": lambda: ln(x),
}
for name, route in routes.items():
    tracer.reset(bans)
    route()
    assert not tracer.hits, (name, "recorded outside a student function")
    with tracer.attributed("f"):
        assert not torch._C._is_torch_function_mode_enabled()
        route()
    assert tracer.hits and tracer.hits <= set(bans), (name, tracer.hits)
tracer.reset(bans)
with tracer.attributed("f"):
    torch.softmax(x @ x.mT, -1)[0].tanh().sum()
assert not tracer.hits, tracer.hits
assert isinstance(torch.ops.aten.layer_norm, torch._ops.OpOverloadPacket)
assert not hasattr(torch.layer_norm, "__wrapped__")  # no handle on the unwrapped kernel
# torch's tables keyed by the op objects still find them: correct code using torch.func keeps working
worker.Tracer().install(bans_of("seq2seq"))
logits, target = torch.randn(2, 5).log_softmax(-1), torch.tensor([1, 2])
torch.func.vmap(lambda lp, t: torch.nn.functional.nll_loss(lp[None], t[None]))(logits, target)
torch.func.grad(lambda a: torch.tanh(a).sum())(torch.randn(3))
tracer.reset(bans)
with tracer.attributed("f"):  # the third install's subclass calls the second's: no recursion
    torch.ops.aten.native_layer_norm.default(x, [4], None, None, 1e-5)
assert tracer.hits == {"torch.native_layer_norm"}, tracer.hits
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.strip() == "ok", r.stdout + r.stderr


UNWRAPPING_PRELUDE = "import functools\nimport inspect\nimport torch\nimport torch.nn.functional as F\n"
# (module-level code, the graded function's body, flagged?): ways around the tracer's wrappers, and a
# student's own objects that merely share their attribute names (never flagged: that would cost a
# correct solution its points)
KERNEL = 'getattr(torch, "layer" + "_norm")'
ATEN = 'getattr(torch.ops.aten, "layer" + "_norm")'
ACT = "class Act:\n    def __init__(self, fn):\n        self._op = fn\nact = Act(torch.tanh)"
CFG = "class Cfg:\n    def __init__(self, d):\n        self._handle = d\ncfg = Cfg(torch.float64)"
OP = "def helper():\n    op = torch.tanh\n    return op\nclass Op:\n    _op = staticmethod(lambda v: v)"
UNWRAPPING = [
    ("", f"return {KERNEL}.__wrapped__(x, (4,))", True),
    ("", f'kernel = {KERNEL}\n    return getattr(kernel, "__wrapped__", kernel)(x, (4,))', True),
    ("", f"return {ATEN}._op(x, [4])", True),
    ("", f"k = {ATEN}\n    return k._op(x, [4])", True),
    (f"kern = {ATEN}", "return kern._op_dk(None, x)", True),
    ("", f'return inspect.getclosurevars({KERNEL}).nonlocals["original"](x, (4,))', True),
    ("", 'return torch._ops._OpNamespace("aten").layer_norm(x, [4])', True),
    (ACT, "return act._op(x)", False),
    (CFG, 'return getattr(cfg, "_handle")', False),
    ("@functools.lru_cache\ndef eye(n):\n    return torch.eye(n)", "return x @ eye.__wrapped__(4)", False),
    (OP, "op = Op()\n    return op._op(x)", False),
    ("", "h = torch.tanh(x)\n    return h.grad, h.data, h.T, h._version", False),
]


@pytest.mark.parametrize(("module", "body", "flagged"), UNWRAPPING)
def test_unwrapping_torch_is_reported_and_a_students_own_objects_are_not(module, body, flagged):
    bans = {"layer_norm": ("torch.nn.functional.layer_norm", "torch.layer_norm")}
    src = f"{UNWRAPPING_PRELUDE}{module}\n\ndef layer_norm(x):\n    {body}\n"
    found = scan(src, ["layer_norm"], bans).get("layer_norm", [])
    assert bool(found) == flagged, (src, found)
    assert all(f.startswith(INTERNALS) for f in found), found
    assert scan(src, ["layer_norm"], {"layer_norm": ()}) == {}  # nothing to go around: nothing reported
