"""Shipped artefacts agree with their sources: templates with the references, public cases with the plans."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("name", available())
def test_public_cases_match_the_plan_and_reference(name):
    """The shipped public cases are what the plan and the reference give now (grader.cases.public_difference:
    the same calls and inputs bit for bit, expected outputs up to the last bits a CPU's BLAS rounds)."""
    plan = load_plan(name)
    assert cases.public_path(plan).exists(), f"run: python -m grader.cases build-public {name}"
    difference = cases.public_difference(plan)
    assert not difference, (
        f"{name}: stale public cases ({difference}); run: python -m grader.cases build-public {name}"
    )


def test_public_cases_differ_from_a_reference_changed_by_a_little(monkeypatch):
    """A change far below any tolerance a grader uses still makes the shipped cases stale."""
    from reference import rnn

    step = rnn.rnn_step
    monkeypatch.setattr(rnn, "rnn_step", lambda *a, **k: step(*a, **k) * (1 + 1e-7))
    assert "rnn_step" in cases.public_difference(load_plan("rnn"))


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
