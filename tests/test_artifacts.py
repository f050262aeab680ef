"""Shipped artefacts agree with their sources: templates with the references, public cases with the plans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grader import cases
from grader.plan import available, load_plan
from grader.template import ROOT, template_for


@pytest.mark.parametrize("name", available())
def test_template_is_generated_from_the_reference(name):
    plan = load_plan(name)
    path = ROOT / "student_template" / f"{plan.module}.py"
    generated = template_for(name)
    if not path.exists() or "raise NotImplementedError" not in generated:
        pytest.skip(
            f"{name}: students write code against no reference function (weights or a hand-written template)"
        )
    assert path.read_text() == generated, f"run: python -m grader.template {name}"
    assert "from reference" not in generated and "import reference" not in generated


def _leaves(tree, path=""):
    """(path, numpy array or scalar) for every leaf of a case tree (tensors, Received arrays, numbers)."""
    if isinstance(tree, (list, tuple)):
        for i, x in enumerate(tree):
            yield from _leaves(x, f"{path}[{i}]")
    elif isinstance(tree, dict):
        for k, x in tree.items():
            yield from _leaves(x, f"{path}.{k}")
    elif isinstance(tree, torch.Tensor):
        yield path, tree.detach().numpy()
    else:
        yield path, getattr(tree, "array", tree)


@pytest.mark.parametrize("name", available())
def test_public_cases_match_the_plan_and_reference(name, tmp_path):
    """The shipped public cases are what the plan and the reference give now: the same calls and inputs,
    bit for bit, and the same expected outputs up to the last bits a machine's BLAS kernels choose (the
    references run in float64; another CPU family rounds differently, about 1e-13 relative)."""
    plan = load_plan(name)
    shipped = cases.public_path(plan)
    assert shipped.exists(), f"run: python -m grader.cases build-public {name}"
    old = cases.load_public(plan)
    new = cases.load_public(plan, cases.write_public(plan, tmp_path / "p.npz"))
    stale = f"{name}: the public cases are stale; run: python -m grader.cases build-public {name}"
    assert len(old.items) == len(new.items), stale
    for a, b in zip(old.items, new.items, strict=True):
        where = f"{stale} ({a.function}, {a.case.label})"
        assert (a.function, a.check, a.kind, a.case.dtype, a.case.label) == (
            b.function,
            b.check,
            b.kind,
            b.case.dtype,
            b.case.label,
        ), where
        calls_a = [(c.function, c.grad_wrt, c.args, c.projection) for c in a.calls]
        calls_b = [(c.function, c.grad_wrt, c.args, c.projection) for c in b.calls]
        for x, y in zip(_leaves([a.case.inputs, calls_a]), _leaves([b.case.inputs, calls_b]), strict=True):
            assert x[0] == y[0] and np.array_equal(np.asarray(x[1]), np.asarray(y[1])), f"{where}: {x[0]}"
        for x, y in zip(_leaves(a.expected), _leaves(b.expected), strict=True):
            ex, ey = np.asarray(x[1]), np.asarray(y[1])
            same = ex.shape == ey.shape and ex.dtype == ey.dtype
            if same and ex.dtype.kind == "f":
                same = np.allclose(ex, ey, rtol=1e-9, atol=1e-12, equal_nan=True)
            elif same:
                same = np.array_equal(ex, ey)
            assert x[0] == y[0] and same, f"{where}: expected{x[0]}"


@pytest.mark.parametrize("name", available())
def test_public_and_hidden_cases_differ(name):
    plan = load_plan(name)
    pub = cases.load_public(plan)
    hid = cases.build(plan, "hidden", b"some-secret")
    assert pub.items and hid.items
    pairs = [
        (p.case.inputs[k], h.case.inputs[k])
        for p, h in zip(pub.items, hid.items, strict=False)
        if p.function == h.function and p.case.label == h.case.label
        for k in p.case.inputs
        if hasattr(p.case.inputs[k], "is_floating_point")
        and p.case.inputs[k].is_floating_point()
        and p.case.inputs[k].shape == h.case.inputs[k].shape
        and p.case.inputs[k].numel() > 1
    ]
    if not pairs:
        pytest.skip(f"{name}: no floating inputs of equal shape in public and hidden cases")
    assert not all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
