"""An assignment's check plan: which functions are graded, on which cases, by which checks, for how many points.

A plan lives in `assignments/<name>/plan.py` as `PLAN = Plan(...)`. It is data plus small recipes:

    Plan(name, module, functions=(Function(...), ...), banned=(...))
    Function(name, points, args, make_inputs, hidden, public, outputs, checks, tolerance, banned, ...)

`make_inputs(gen, params, dtype)` builds one case's arguments from a seeded torch.Generator; `hidden` and
`public` list the shape parameters of each case (the grader runs each for every dtype in `dtypes`).
Checks (grader.checks) turn a case into worker calls and judge the replies. Plans name their reference
functions by dotted path, so importing a plan never imports the reference.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.compare import Tolerance
from grader.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from grader.checks import Check

ASSIGNMENTS_DIR = Path(__file__).resolve().parent.parent / "assignments"

# Measured float noise (benchmarks/tolerances.py) times a safety factor; plans may override per function.
DEFAULT_TOLERANCE: dict[str, Tolerance] = {
    "float64": Tolerance(atol=1e-9, rtol=1e-7),
    "float32": Tolerance(atol=2e-5, rtol=1e-4),
}

AUTOGRAD = (
    "torch.Tensor.backward",
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.autograd.functional",
)


@dataclass(frozen=True)
class Call:
    """One request to the worker: call `function(*args)`.

    With `grad_wrt` (indices into args), the worker also differentiates L = sum_k <projection_k, output_k>
    with respect to those arguments and returns the gradients (None where no gradient reaches).
    """

    function: str
    args: tuple[Any, ...]
    grad_wrt: tuple[int, ...] = ()
    projection: Any = None


@dataclass(frozen=True)
class Reply:
    """What came back from one Call, as decoded in the trusted process.

    `failure` is None when the call returned; otherwise "exception", "timeout", "crash", "bad-reply",
    "missing" or "skipped", with `error` saying what happened.
    """

    value: Any = None
    grads: tuple[Any, ...] | None = None
    failure: str | None = None
    error: str = ""
    mutated: tuple[str, ...] = ()
    banned: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class Case:
    """One set of inputs for one function: where it comes from, its dtype and shapes, and the arguments."""

    function: str
    visibility: str  # "public" | "hidden"
    dtype: str  # "float64", "float32", ...
    label: str  # "B=3 T=5 D=4 H=6"
    index: int
    inputs: Mapping[str, Any]

    @property
    def title(self) -> str:
        return (
            f"{self.visibility}, {self.dtype}, {self.label}"
            if self.label
            else f"{self.visibility}, {self.dtype}"
        )


@dataclass(frozen=True)
class Function:
    """A graded function of the student's module."""

    name: str
    points: float
    args: tuple[str, ...]
    make_inputs: Callable[[Any, Mapping[str, Any], Any], dict[str, Any]]
    hidden: tuple[Mapping[str, Any], ...]
    public: tuple[Mapping[str, Any], ...]
    outputs: Any = "output"  # names of the outputs, mirroring the return structure, e.g. ("hs", "h_T")
    checks: tuple[Check, ...] = ()
    dtypes: tuple[str, ...] = ("float64", "float32")
    tolerance: Mapping[str, Tolerance] = field(default_factory=dict)
    banned: tuple[str, ...] = ()  # banned APIs beyond the plan's (e.g. AUTOGRAD for a by-hand backward)
    reference: str = ""  # "module:function"; default "<plan.reference>:<name>"
    signature: str = ""  # shown in feedback, e.g. "rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> (hs, h_T)"

    def tol(self, dtype: str) -> Tolerance:
        return self.tolerance.get(dtype) or DEFAULT_TOLERANCE.get(dtype) or Tolerance(0.0, 0.0)


@dataclass(frozen=True)
class Plan:
    """Everything the grader needs to know about one assignment."""

    name: str
    module: str  # the student's file stem: rnn -> rnn.py / rnn.ipynb
    functions: tuple[Function, ...]
    banned: tuple[str, ...] = ()
    reference: str = ""  # default "reference.<name>"
    title: str = ""

    @property
    def max_score(self) -> float:
        return float(sum(f.points for f in self.functions))

    @property
    def graded_files(self) -> tuple[str, ...]:
        """Files graded as data (a trained model's weights): such a plan is checked on the student's folder."""
        return tuple(f for fn in self.functions for c in fn.checks for f in getattr(c, "files", ()))

    def function(self, name: str) -> Function:
        for f in self.functions:
            if f.name == name:
                return f
        raise ConfigError(f"assignment {self.name!r} has no function {name!r}")

    def reference_of(self, fn: Function) -> Callable[..., Any]:
        """Resolve a function's reference implementation (trusted process only)."""
        path = fn.reference or f"{self.reference or 'reference.' + self.name}:{fn.name}"
        mod_name, _, attr = path.partition(":")
        try:
            return getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"reference {path} for {self.name}.{fn.name} is missing: {e}") from None


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def available() -> list[str]:
    """Names of the assignments that ship a plan."""
    return sorted(p.parent.name for p in ASSIGNMENTS_DIR.glob("*/plan.py"))


def load_plan(name: str) -> Plan:
    """Import assignments/<name>/plan.py and return its PLAN."""
    if not _NAME.match(name) or not (ASSIGNMENTS_DIR / name / "plan.py").is_file():
        known = ", ".join(available()) or "none"
        raise ConfigError(f"unknown assignment {name!r} (known: {known})")
    try:
        mod = importlib.import_module(f"assignments.{name}.plan")
    except Exception as e:  # a broken plan is our fault: fail loudly with the cause
        raise ConfigError(f"the check plan of {name!r} failed to load: {e.__class__.__name__}: {e}") from e
    plan = getattr(mod, "PLAN", None)
    if not isinstance(plan, Plan):
        raise ConfigError(f"assignments/{name}/plan.py defines no PLAN")
    return plan


def label(params: Mapping[str, Any]) -> str:
    """'B=3 T=5 D=4 H=6' from a case's shape parameters (keys starting with '_' are hidden)."""
    return " ".join(f"{k}={v}" for k, v in params.items() if not k.startswith("_"))
