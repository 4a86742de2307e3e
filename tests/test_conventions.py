"""Conventions: presets, aliases, overrides and the errors for unknown names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdref.reference import dml, logits, st
from kdref.torch import st as torch_st
from tests.conftest import LOSSES

S = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
T_ = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("fn", [st.soft_target_loss, torch_st.soft_target_loss])
def test_unknown_convention_lists_the_valid_ones(fn):
    x = (S, T_) if fn is st.soft_target_loss else (torch.tensor(S), torch.tensor(T_))
    with pytest.raises(ValueError, match=r"unknown convention 'hinton'.*'paper', 'kl_t2', 'kl', 'kdzoo'"):
        fn(*x, 4.0, convention="hinton")


def test_unknown_knob_value_lists_the_valid_ones():
    with pytest.raises(ValueError, match="reduction must be one of 'batchmean', 'mean', 'sum', 'none'"):
        st.soft_target_loss(S, T_, 4.0, reduction="elementwise")


def test_an_explicit_knob_overrides_the_preset():
    assert st.soft_target_loss(S, T_, 4.0, convention="paper", divergence="kl") == st.soft_target_loss(S, T_, 4.0)
    assert logits.logit_regression_loss(S, T_, convention="kdzoo", scale="half") == 1.125


def test_aliases_resolve_to_their_preset():
    for alias in ("kdzoo", "repdistiller", "mdistiller"):
        assert st.SOFT_TARGET_LOSS.resolve(alias) == st.SOFT_TARGET_LOSS.resolve("kl_t2")


def test_kdzoo_dml_takes_exactly_one_peer():
    with pytest.raises(ValueError, match="exactly one peer"):
        dml.dml_mimicry_loss(S, [T_, T_], convention="kdzoo")


@pytest.mark.parametrize(("method", "loss"), LOSSES, ids=[f"{m.name}:{loss.name}" for m, loss in LOSSES])
def test_every_convention_is_described_and_every_argument_and_knob_documented(method, loss):
    declaration = loss.declaration
    assert set(declaration.descriptions) == set(declaration.presets)
    undocumented = [a.name for a in declaration.args if not a.doc] + [k.name for k in declaration.knobs if not k.doc]
    assert not undocumented, f"{loss.name}: no doc in the declaration for {undocumented}"
