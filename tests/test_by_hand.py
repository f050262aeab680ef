"""The by_hand assignment: the reference constructions and evaluators, the behavioural check on stand-in
replies, and real submissions graded (two different correct constructions get full marks)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from assignments.by_hand import plan as bp
from grader import cases
from grader.plan import Reply
from grader.wire import Received
from reference import by_hand as ref

SUBMISSIONS = Path(__file__).parent / "submissions" / "by_hand"
PLAN = bp.PLAN


@pytest.mark.parametrize("gate", sorted(ref.GATES))
def test_reference_gates_within_001(gate):
    x, y = ref.truth_table(gate)
    assert (ref.run_unit(getattr(ref, f"{gate}_unit")(), x) - y).abs().max() < 1e-4


def test_sigmoid_rnn_matches_torch_nn_rnn_through_tanh():
    """sigmoid(z) = (1 + tanh(z / 2)) / 2, so g = 2h - 1 follows nn.RNN(tanh) with rescaled weights."""
    torch.manual_seed(0)
    H = 5
    w = {
        k: torch.randn(*s, dtype=torch.float64)
        for k, s in {
            "W_ih": (H, 1),
            "W_hh": (H, H),
            "b_ih": (H,),
            "b_hh": (H,),
            "W_out": (1, H),
            "b_out": (1,),
        }.items()
    }
    w["h0"] = torch.rand(H, dtype=torch.float64)
    bits = torch.randint(0, 2, (4, 9))
    net = torch.nn.RNN(1, H, batch_first=True).double()
    with torch.no_grad():
        net.weight_ih_l0.copy_(w["W_ih"] / 2)
        net.weight_hh_l0.copy_(w["W_hh"] / 4)
        net.bias_ih_l0.copy_(w["b_ih"] / 2)
        net.bias_hh_l0.copy_(w["b_hh"] / 2 + w["W_hh"].sum(1) / 4)
        g, _ = net(bits[..., None].double(), (2 * w["h0"] - 1).expand(1, 4, H).contiguous())
    y = torch.sigmoid(((g + 1) / 2) @ w["W_out"].T + w["b_out"])[..., 0]
    assert torch.allclose(ref.rnn_outputs(w, bits), y, atol=1e-12)


def test_reference_parity_rnn_on_long_streams():
    bits = torch.randint(0, 2, (50, 100), generator=torch.Generator().manual_seed(0))
    assert (ref.run_rnn(ref.parity_rnn(), bits) - ref.parity(bits)).abs().max() < 1e-3
    assert torch.equal(bp.running_parity(bits), ref.parity(bits))


def judge(fn_name: str, weights, check: int = 0):
    fn = PLAN.function(fn_name)
    case = cases.make_case(fn, "hidden", 0, {}, "float64", 1)
    calls, expected = fn.checks[check].prepare(
        PLAN, fn, case, PLAN.reference_of(fn), torch.Generator().manual_seed(2)
    )
    assert [c.function for c in calls] == [fn_name]
    return fn.checks[check].judge(fn, case, expected, [Reply(value=weights)])


def t(*v):
    return Received(torch.tensor(v, dtype=torch.float64).numpy(), "tensor")


def test_behaviour_check_accepts_any_numbers_and_names_the_failing_row():
    assert judge("nor_unit", (t(-40.0, -40.0), 20.0)).ok
    assert judge("nor_unit", ([-40.0, -40.0], [20.0])).ok
    c = judge("nor_unit", (t(-4.0, -4.0), 2.0))
    assert not c.ok and "on input (0, 0) the output is 0.8808, expected 1 (within 0.01)" in c.message
    c = judge("nor_unit", (t(-4.0, -4.0, 1.0), 2.0))
    assert not c.ok and "w has shape (3,), expected (2,)" in c.message
    c = judge("nor_unit", t(-4.0, -4.0))
    assert not c.ok and "expected a pair (w, b)" in c.message
    c = judge("nor_unit", (t(float("nan"), 1.0), 2.0))
    assert not c.ok and "NaN" in c.message


def test_behaviour_check_hides_hidden_streams():
    w = {k: Received(v.numpy(), "tensor") for k, v in ref.parity_rnn().items()}
    assert judge("parity_rnn", w, 1).ok
    w["h0"] = t(1.0, 0.0)
    c = judge("parity_rnn", w, 1)
    assert not c.ok and "hidden stream 0 (length 100), the output after step 1" in c.message


EXPECTED = {
    "correct.py": set(),
    "correct_alt.py": set(),
    "bug_soft.py": {f"{g}_unit:truth table" for g in bp.GATES}
    | {"parity_rnn:all streams of length 6", "parity_rnn:streams of length 100"},
    "bug_swapped.py": {"nand_unit:truth table", "nor_unit:truth table"},
    "bug_h0.py": {"parity_rnn:all streams of length 6", "parity_rnn:streams of length 100"},
    "bug_malformed.py": {"parity_rnn:all streams of length 6", "parity_rnn:streams of length 100"},
    "bug_counter.py": {"parity_rnn:streams of length 100"},
}


@pytest.fixture(scope="module")
def graded():
    from grader.loader import load_entry
    from grader.pipeline import grade_submission, start_zygote
    from grader.runner import RunOptions

    zygote = start_zygote()
    try:
        sets = [cases.build(PLAN, "hidden", b"test-secret"), cases.load_public(PLAN)]
        return {
            f.name: grade_submission(
                zygote, PLAN, sets, load_entry(f, PLAN.module, Path("/tmp")), RunOptions()
            )
            for f in sorted(SUBMISSIONS.glob("*.py"))
        }
    finally:
        zygote.stop()


def test_every_submission_has_an_expectation():
    assert {f.name for f in SUBMISSIONS.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_submission_fails_exactly_the_right_checks(graded, name):
    r = graded[name]
    failed = collections.Counter(f"{x.function}:{x.kind}" for x in r.tests if not x.passed)
    assert set(failed) == EXPECTED[name]
    assert (r.score == r.max_score) == (not EXPECTED[name])
