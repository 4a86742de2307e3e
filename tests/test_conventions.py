"""Conventions and knobs, for every loss: each convention described, each argument and knob
documented, and an unknown name refused with the list of the valid ones."""

from __future__ import annotations

import re

import pytest

from tests.conftest import LOSSES

IDS = [f"{m.name}:{loss.name}" for m, loss in LOSSES]


@pytest.mark.parametrize(("method", "loss"), LOSSES, ids=IDS)
def test_every_convention_is_described_and_every_argument_and_knob_documented(method, loss):
    declaration = loss.declaration
    assert set(declaration.descriptions) == set(declaration.presets)
    undocumented = [a.name for a in declaration.args if not a.doc] + [k.name for k in declaration.knobs if not k.doc]
    assert not undocumented, f"{loss.name}: no doc in the declaration for {undocumented}"


@pytest.mark.parametrize(("method", "loss"), LOSSES, ids=IDS)
def test_an_unknown_convention_or_choice_lists_the_valid_ones(method, loss):
    """bad_input checks, on both sides, that the error names the bad convention or knob value;
    this, that it lists the valid ones (the wrappers of both sides resolve through the declaration)."""
    declaration = loss.declaration
    names = ", ".join(map(repr, declaration.conventions.names))
    with pytest.raises(ValueError, match=re.escape(f"unknown convention 'hinton'; valid conventions are {names}")):
        declaration.resolve("hinton")
    for knob in (k for k in declaration.knobs if k.choices is not None):
        choices = ", ".join(map(repr, knob.choices))
        with pytest.raises(ValueError, match=re.escape(f"{knob.name} must be one of {choices}")):
            declaration.resolve(**{knob.name: "elementwise"})
