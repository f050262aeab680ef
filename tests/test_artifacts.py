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
    if not path.exists():
        pytest.skip(f"{name} ships no generated template")
    assert path.read_text() == template_for(name), f"run: python -m grader.template {name}"


@pytest.mark.parametrize("name", available())
def test_public_cases_match_the_plan_and_reference(name, tmp_path):
    plan = load_plan(name)
    shipped = cases.public_path(plan)
    assert shipped.exists(), f"run: python -m grader.cases build-public {name}"
    fresh = cases.write_public(plan, tmp_path / "p.npz")
    with np.load(shipped, allow_pickle=False) as a, np.load(fresh, allow_pickle=False) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert np.array_equal(a[k], b[k]), f"{name}: {k} is stale; run: python -m grader.cases build-public {name}"


@pytest.mark.parametrize("name", available())
def test_public_and_hidden_cases_differ(name):
    plan = load_plan(name)
    pub = cases.load_public(plan)
    hid = cases.build(plan, "hidden", b"some-secret")
    assert pub.items and hid.items
    p0 = next(iter(pub.items[0].case.inputs.values()))
    h0 = next(iter(hid.items[0].case.inputs.values()))
    if hasattr(p0, "shape") and p0.shape == h0.shape and p0.is_floating_point():
        assert not np.array_equal(p0.numpy(), h0.numpy())
