"""Secrets: tries to get the reference implementation (import reference, the editable
finder, the file next to grader's __file__, the repo path) and to use it. Its own functions return zeros, so
it scores 0 unless a way in works.
"""

import importlib
import importlib.util
import os

import torch

TARGETS = {}  # filled in by tests/test_containment.py: paths and values to go after


def report(what, ok, detail=""):
    """One line per attempt: LEAK when the attack worked, BLOCKED when it did not."""
    print(("LEAK " if ok else "BLOCKED ") + what + (": " + str(detail)[:120] if detail else ""), flush=True)


REF = None
try:
    REF = importlib.import_module("reference.rnn")
    report("import reference.rnn", True, REF.__file__)
except Exception as e:
    report("import reference.rnn", False, type(e).__name__)
try:
    import grader

    path = os.path.join(os.path.dirname(os.path.dirname(grader.__file__)), "reference", "rnn.py")
except Exception:
    path = ""
for candidate in (path, TARGETS.get("reference_file", "")):
    if REF is not None or not candidate:
        continue
    try:
        spec = importlib.util.spec_from_file_location("stolen", candidate)
        REF = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(REF)
        report("load " + candidate, True)
    except Exception as e:
        REF = None
        report("load " + candidate, False, type(e).__name__)
for candidate in (TARGETS.get("plan_file", ""), TARGETS.get("repo", "")):
    try:
        if os.path.isdir(candidate):
            report("list " + candidate, True, os.listdir(candidate)[:5])
        else:
            with open(candidate) as f:
                report("read " + candidate, True, f.read(60))
    except Exception as e:
        report("read " + candidate, False, type(e).__name__)


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.zeros_like(h_prev)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    return torch.zeros(x.shape[0], x.shape[1], h0.shape[1], dtype=x.dtype), torch.zeros_like(h0)


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    z = torch.zeros_like
    return {"x": z(x), "h0": z(h0), "W_ih": z(W_ih), "W_hh": z(W_hh), "b_ih": z(b_ih), "b_hh": z(b_hh)}


def clip_grad_norm(grads, max_norm):
    return [torch.zeros_like(g) for g in grads], torch.zeros((), dtype=grads[0].dtype)


if REF is not None:  # use the stolen reference for everything
    rnn_step, rnn_forward = REF.rnn_step, REF.rnn_forward
