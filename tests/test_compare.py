"""The pure comparison core: every verdict a bug would flip."""

from __future__ import annotations

import warnings

import numpy as np

from grader.compare import EXACT, Tolerance, compare_array, compare_tree
from grader.wire import Other, Received

TOL = Tolerance(1e-6, 1e-6)


def t(a, dtype="float64"):
    return Received(np.asarray(a, dtype=dtype), "tensor")


def test_equal_arrays_pass_and_small_noise_passes():
    e = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert compare_array("hs", e, t(e), TOL).ok
    assert compare_array("hs", e, t(e + 5e-7), TOL).ok


def test_value_error_reports_max_error_and_position_without_values_when_hidden():
    e = np.zeros((2, 3, 4))
    g = e.copy()
    g[1, 2, 3] = 0.5
    c = compare_array("hs", e, t(g), TOL)
    assert not c.ok and c.where == (1, 2, 3)
    assert "max abs error 0.5 at [1, 2, 3]" in c.message
    assert "expected" not in c.message  # hidden values are never quoted
    c = compare_array("hs", e, t(g), TOL, reveal=True)
    assert "expected 0, got 0.5" in c.message


def test_shape_dtype_and_kind_are_named():
    e = np.zeros((4, 7, 16))
    c = compare_array("hs", e, t(np.zeros((7, 4, 16))), TOL)
    assert not c.ok and c.message == "hs has shape (7, 4, 16), expected (4, 7, 16)"
    c = compare_array("hs", e, t(np.zeros((4, 7, 16)), "float32"), TOL)
    assert "dtype torch.float32, expected torch.float64" in c.message
    c = compare_array("hs", e, Received(np.zeros((4, 7, 16)), "ndarray"), TOL)
    assert "numpy array" in c.message and "expected a torch.Tensor" in c.message
    c = compare_array("hs", e, Other("Lier"), TOL)
    assert not c.ok and "Lier" in c.message


def test_float32_case_compares_to_float64_reference_with_required_dtype():
    e = np.array([1.0, 2.0])
    assert compare_array("h", e, t(e, "float32"), TOL, dtype="float32").ok
    assert not compare_array("h", e, t(e, "float64"), TOL, dtype="float32").ok


def test_nan_and_inf_fail():
    e = np.array([1.0, 2.0])
    assert "NaN at [1]" in compare_array("h", e, t([1.0, np.nan]), TOL).message
    assert not compare_array("h", e, t([1.0, np.inf]), TOL).ok
    assert compare_array("h", np.array([np.inf]), t([np.inf]), TOL).ok
    assert not compare_array("h", np.array([np.inf]), t([-np.inf]), TOL).ok


def test_extreme_values_fail_quietly_in_every_float_width():
    """A student's inf, NaN or float64 near its limit: a failure with its place, and no numpy warning
    (the float32 path computes without errstate: float32 values cannot overflow in float64)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in ("float16", "float32", "float64"):
            e = np.array([1.0, -2.0, 3.0], dtype=dtype)
            for bad in (np.inf, -np.inf, np.nan, float(np.finfo(dtype).max)):
                c = compare_array("h", e, t([1.0, -2.0, bad], dtype), TOL, dtype=dtype)
                assert not c.ok and c.where == (2,), (dtype, bad, c)
            e64 = np.array([1.0, -np.finfo("float64").max, 3.0])  # a float32 case: a float64 reference
            for bad in (np.inf, -np.inf, np.nan, float(np.finfo(dtype).max)):
                c = compare_array("h", e64, t([1.0, bad, 3.0], dtype), TOL, dtype=dtype)
                assert not c.ok and c.where == (1,), (dtype, bad, c)
        e = np.array([-1.5e308, 1.0])  # |got - expected| overflows float64: still a failure, quietly
        c = compare_array("h", e, t([1.5e308, 1.0]), TOL)
        assert not c.ok and c.where == (0,), c


def test_rtol_scales_with_magnitude():
    tol = Tolerance(0.0, 1e-3)
    assert compare_array("h", np.array([1000.0]), t([1000.5]), tol).ok
    assert not compare_array("h", np.array([1.0]), t([1.5]), tol).ok


def test_a_reference_compared_again_keeps_its_own_tolerance_and_values():
    """The bound kept per reference array (one case set, many submissions) follows the tolerance asked
    for and dies with its array: a new array at the same address gets its own."""
    e = np.array([1.0, 2.0, 3.0])
    assert compare_array("h", e, t(e + 5e-4), Tolerance(1e-3, 0.0)).ok
    assert not compare_array("h", e, t(e + 5e-4), Tolerance(1e-4, 0.0)).ok
    assert compare_array("h", e, t(e + 5e-4), Tolerance(1e-3, 0.0)).ok
    for shift in (10.0, 20.0, 30.0):  # freed and allocated again: often the same id
        del e
        e = np.array([1.0, 2.0, 3.0]) + shift
        assert compare_array("h", e, t(e), TOL).ok
        assert not compare_array("h", e, t(e - 10.0), TOL).ok
    e = np.array([1.0, np.inf])  # a reference that is not finite everywhere takes the careful path
    assert not compare_array("h", e, t([1.0, 5.0]), TOL).ok
    assert not compare_array("h", e, t([1.0, np.nan]), TOL).ok
    assert compare_array("h", e, t([1.0, np.inf]), TOL).ok


def test_integer_and_exact_comparisons():
    e = np.array([1, -1, 1], dtype=np.int64)
    assert compare_array("s", e, t(e, "int64"), EXACT).ok
    c = compare_array("s", e, t([1, 1, 1], "int64"), EXACT)
    assert not c.ok and "differs in 1 of 3 elements, first at [1]" in c.message


def test_tree_structure_names_and_scalars():
    exp = (np.zeros((2, 3)), (np.ones(3), np.ones(3)))
    names = ("hs", ("h_T", "c_T"))
    got = (t(np.zeros((2, 3))), (t(np.ones(3)), t([1, 1, 2])))
    c = compare_tree("output", exp, got, TOL, names=names)
    assert not c.ok and c.message.startswith("c_T:")
    c = compare_tree("output", exp, (t(np.zeros((2, 3))),), TOL, names=names)
    assert not c.ok and "has 1 elements, expected 2" in c.message
    c = compare_tree("output", exp, t(np.zeros((2, 3))), TOL, names=names)
    assert not c.ok and "expected a tuple of 2" in c.message
    # a 0-dim expected value accepts a Python float or a 0-dim tensor
    assert compare_tree("n", np.array(2.0), 2.0, TOL).ok
    assert compare_tree("n", np.array(2.0), t(2.0), TOL).ok
    assert not compare_tree("n", np.array(2.0), 2.1, TOL).ok


def test_tree_dicts_need_every_key():
    exp = {"x": np.zeros(2), "h0": np.zeros(2)}
    c = compare_tree("output", exp, {"x": t(np.zeros(2))}, TOL)
    assert not c.ok and "lacks the keys ['h0']" in c.message
    c = compare_tree("output", exp, {"x": t(np.zeros(2)), "h0": t([0, 1.0])}, TOL)
    assert not c.ok and c.message.startswith("h0")
