"""The proof harness: the checks that show a torch loss computes its paper's function.

One table of checks (:data:`CHECKS`), walked by both ``kdref verify`` and the pytest suite, so a
user's machine runs the same proof as CI:

- ``golden``: the spec's worked examples reproduce to their printed digits (reference and torch);
- ``agreement`` / ``float32``: on Hypothesis-drawn inputs, torch equals the NumPy reference;
- ``autocast``: under ``torch.autocast`` with bfloat16 inputs, the loss accumulates in float32;
- ``gradcheck``: ``torch.autograd.gradcheck`` (and ``gradgradcheck``) in float64; constant inputs
  (the teacher, the peers) receive no gradient;
- ``fd_gradient``: the torch gradient equals central finite differences of the NumPy reference;
- ``properties``: what the math guarantees, on both sides;
- ``bad_input``: malformed arguments, knobs and conventions, generated from each loss's
  declaration, raise ``ValueError``/``TypeError`` naming what is at fault;
- ``compile``: ``torch.compile`` gives the reference's values (once per loss, default convention).

Modules: :mod:`~kdref.proof.compare` (tolerances, printed digits), :mod:`~kdref.proof.sides` (the
loss on either side, finite differences), :mod:`~kdref.proof.bad_input`, :mod:`~kdref.proof.checks`.
"""

from kdref.proof.bad_input import BadInput, bad_inputs
from kdref.proof.checks import (
    CHECK_NAMES,
    CHECKS,
    Check,
    check,
    check_agreement,
    check_autocast,
    check_bad_input,
    check_compile,
    check_fd_gradient,
    check_golden,
    check_gradcheck,
    check_properties,
    golden_arguments,
    golden_examples,
    plan,
    run_checks,
    run_examples,
    select,
)
from kdref.proof.compare import Result, Worst, compare, max_abs, printed_tolerance
from kdref.proof.sides import (
    Subject,
    error_scale,
    fd_gradient,
    round_inputs,
    subject,
    to_numpy,
    to_torch,
    torch_gradient,
)

__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "BadInput",
    "Check",
    "Result",
    "Subject",
    "Worst",
    "bad_inputs",
    "check",
    "check_agreement",
    "check_autocast",
    "check_bad_input",
    "check_compile",
    "check_fd_gradient",
    "check_golden",
    "check_gradcheck",
    "check_properties",
    "compare",
    "error_scale",
    "fd_gradient",
    "golden_arguments",
    "golden_examples",
    "max_abs",
    "plan",
    "printed_tolerance",
    "round_inputs",
    "run_checks",
    "run_examples",
    "select",
    "subject",
    "to_numpy",
    "to_torch",
    "torch_gradient",
]
