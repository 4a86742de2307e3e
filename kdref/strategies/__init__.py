"""Hypothesis strategies of valid inputs for every method (public API).

Each ``<method>_inputs`` strategy draws a dict of keyword arguments (NumPy arrays and numbers)
that the method's loss accepts, so another project can test its own loss with them::

    from hypothesis import given
    from kdref import strategies
    from kdref.reference.st import soft_target_loss

    @given(strategies.st_inputs())
    def test_my_kd_loss(inputs):
        assert abs(my_kd_loss(**inputs) - soft_target_loss(**inputs)) < 1e-6

The draws lean on the edge cases where implementations part ways: for logits, ties, teacher
equal to the student (or equal up to a per-row shift), magnitudes up to ±1e4, a batch of one,
two classes; for feature maps, all-zero maps and channels, a single spatial position, negative
and very large activations. With ``gradient=True`` the magnitudes stay moderate, where finite
differences are accurate enough to check a gradient against.

One module per family or method (``kdref/strategies/<name>.py``); everything public is
re-exported here.
"""

from kdref.strategies.at import at_inputs, at_multi_inputs
from kdref.strategies.cc import cc_adjacent_inputs, cc_inputs
from kdref.strategies.embeddings import embedding_pairs, embeddings
from kdref.strategies.features import feature_maps, feature_pairs
from kdref.strategies.fitnet import fitnet_inputs, fitnet_regressed_inputs
from kdref.strategies.fsp import fsp_inputs, fsp_matrix_inputs
from kdref.strategies.irg import irg_inputs
from kdref.strategies.logits import (
    dml_inputs,
    hinton_inputs,
    labels,
    logit_pairs,
    logits,
    logits_inputs,
    st_inputs,
    temperatures,
    torchdistill_inputs,
)
from kdref.strategies.nst import nst_inputs, nst_kernels, well_conditioned_maps
from kdref.strategies.pkt import pkt_inputs, well_posed_rows
from kdref.strategies.rkd import conditioning, rkd_inputs
from kdref.strategies.sp import smooth_rows, sp_inputs

__all__ = [
    "at_inputs",
    "at_multi_inputs",
    "cc_adjacent_inputs",
    "cc_inputs",
    "conditioning",
    "dml_inputs",
    "embedding_pairs",
    "embeddings",
    "feature_maps",
    "feature_pairs",
    "fitnet_inputs",
    "fitnet_regressed_inputs",
    "fsp_inputs",
    "fsp_matrix_inputs",
    "hinton_inputs",
    "irg_inputs",
    "labels",
    "logit_pairs",
    "logits",
    "logits_inputs",
    "nst_inputs",
    "nst_kernels",
    "pkt_inputs",
    "rkd_inputs",
    "smooth_rows",
    "sp_inputs",
    "st_inputs",
    "temperatures",
    "torchdistill_inputs",
    "well_conditioned_maps",
    "well_posed_rows",
]
