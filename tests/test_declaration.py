"""The declaration's own rules: how a call is bound, what a knob accepts, what the docs say.

The proof's ``bad_input`` check exercises the generated bad inputs of every real loss; these tests
pin the mechanism itself, on a small declaration made here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY
from kdref.torch._common import TORCH

PAIR = Declaration(
    name="pair_loss",
    args=(Arg("student", "embeddings", "the student's rows"),
          Arg("teacher", "embeddings", "the teacher's rows", like="student", match="batch"),
          Arg("weight", "weight", "a factor", optional=True)),
    knobs=(Knob("reduction", "mean", "over the batch", choices=("mean", "sum")),
           Knob("eps", 1e-8, "a floor", low=0.0, open_low=True),
           Knob("order", 2, "a power", low=1, integer=True),
           Knob("squared", False, "square it", choices=(True, False))),
    presets={"paper": {}, "official": {"reduction": "sum", "eps": 1e-6}},
    aliases={"kdzoo": "official"},
    descriptions={"paper": "the paper", "official": "the official code"},
)


@PAIR.implement(NUMPY)
def pair_reference(student, teacher, weight, *, reduction, eps, order, squared):
    return {"student": student, "teacher": teacher, "weight": weight, "reduction": reduction, "eps": eps,
            "order": order, "squared": squared}


@PAIR.implement(TORCH)
def pair_torch(student, teacher, weight, *, reduction, eps, order, squared):
    return student, teacher


S, T = np.ones((3, 2, 2)), np.zeros((3, 5))


def test_a_call_binds_arguments_flattens_embeddings_and_resolves_knobs():
    out = pair_reference(S, T, convention="kdzoo", order=3)
    assert out["student"].shape == (3, 4) and out["weight"] is None
    assert (out["reduction"], out["eps"], out["order"], out["squared"]) == ("sum", 1e-6, 3, False)
    assert pair_reference(student=S, teacher=T, weight=2)["weight"] == 2.0


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda: pair_reference(S), TypeError, "missing the argument 'teacher'"),
    (lambda: pair_reference(S, T, 1.0, 2.0), TypeError, "takes 3 positional arguments"),
    (lambda: pair_reference(S, T, student=S), TypeError, r"\['student'\] both by position and by keyword"),
    (lambda: pair_reference(S, T, chunk=4), ValueError, r"unknown knob\(s\) \['chunk'\]"),
    (lambda: pair_reference(S, T, convention="mine"), ValueError, "unknown convention 'mine'"),
    (lambda: pair_reference(S, T, eps=0.0), ValueError, "eps must be > 0"),
    (lambda: pair_reference(S, T, order=2.0), TypeError, "order must be an integer"),
    (lambda: pair_reference(S, T, order=0), ValueError, "order must be a finite number in"),
    (lambda: pair_reference(S, T, squared=1), ValueError, "squared must be one of True, False"),
    (lambda: pair_reference(S, T[:2]), ValueError, "^teacher must have the batch size of student"),
])
def test_a_bad_call_is_refused_with_words_that_name_it(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_both_sides_refuse_the_other_sides_arrays():
    with pytest.raises(TypeError, match=r"^student must be a NumPy array"):
        pair_reference(torch.ones(3, 2), T)
    with pytest.raises(TypeError, match=r"^student must be a torch\.Tensor"):
        pair_torch(S, T)


def test_a_body_must_take_exactly_the_declared_knobs():
    with pytest.raises(TypeError, match="must take"):
        @PAIR.implement(NUMPY)
        def pair_missing_a_knob(student, teacher, weight, *, reduction, eps, order):
            return 0.0


def test_derive_drops_knobs_from_the_presets_too():
    sibling = PAIR.derive("pair_loss_plain", drop_knobs=("eps",))
    assert [k.name for k in sibling.knobs] == ["reduction", "order", "squared"]
    assert sibling.presets["official"] == {"reduction": "sum"}


def test_items_alike_lists_share_batch_dtype_and_device():
    layers = Declaration(name="layers_loss", args=(Arg("maps", "embeddings_list", "the layers", items_alike=True),))

    @layers.implement(NUMPY)
    def layers_reference(maps):
        return len(maps)

    assert layers_reference([np.ones((2, 3)), np.ones((2, 5, 5))]) == 2
    with pytest.raises(ValueError, match=r"^maps\[1\] must have the batch size of maps\[0\]"):
        layers_reference([np.ones((2, 3)), np.ones((3, 3))])
    with pytest.raises(TypeError, match=r"^maps\[1\] must have the dtype of maps\[0\]"):
        layers_reference([np.ones((2, 3)), np.ones((2, 3), np.float32)])


def test_the_docstring_lists_every_argument_convention_and_knob():
    doc = pair_reference.__doc__
    for line in ("  student: the student's rows; ``[N, ...]``.",
                 "  weight: a factor; a real number ≥ 0; optional.",
                 "  eps: a floor; a real number in (0, ∞).",
                 "  order: a power; an integer in [1, ∞)."):
        assert line in doc, doc
    assert "``'kdzoo'`` (= ``'official'``)" in doc


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_a_library_name_of_a_sibling_loss_points_to_it(side):
    """torchdistill's KD is its own loss (α·CE + β·T²·KL): asking soft_target_loss for it names the
    function that computes it."""
    import importlib

    module = importlib.import_module(f"kdref.{side}.st")
    s = np.zeros((2, 3)) if side == "reference" else importlib.import_module("torch").zeros(2, 3)
    with pytest.raises(ValueError, match=r"^soft_target_loss: unknown convention 'torchdistill'; it is a convention "
                                         r"of torchdistill_kd_loss"):
        module.soft_target_loss(s, s, 2.0, convention="torchdistill")
    with pytest.raises(ValueError, match=r"^soft_target_loss: unknown convention 'nope'; valid conventions"):
        module.soft_target_loss(s, s, 2.0, convention="nope")


def test_a_ragged_nested_list_is_refused_naming_the_argument():
    """NumPy's own error for a ragged list names no argument; the reference's backend does."""
    from kdref.reference.st import soft_target_loss

    with pytest.raises(ValueError, match=r"^student must be an array \(a nested list of one shape\), got a ragged"):
        soft_target_loss([[1.0, 2.0], [3.0]], np.ones((2, 2)), 1.0)
