"""The package as a user meets it: the reference without torch, the CLI, the golden data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kdref
from kdref.records import METHODS
from kdref.registry import GOLDEN_DIR

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
import kdref, kdref.reference, kdref.strategies, kdref.records
s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]); t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
print(f"{kdref.reference.st.soft_target_loss(s, t, 4.0):.8g}")
try:
    import torch
except ImportError:
    print("torch blocked")
"""


def test_reference_works_with_torch_absent():
    out = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0.28855901", "torch", "blocked"]


def test_kdref_list_shows_methods_citations_and_conventions():
    out = subprocess.run([sys.executable, "-m", "kdref.cli", "list"], capture_output=True, text=True, check=True)
    for method in METHODS.values():
        assert method.name in out.stdout and method.citation in out.stdout
    assert "kl_t2 (default) = kdzoo, repdistiller, mdistiller: T² · KL(p‖q)" in out.stdout
    assert "official_tf: official TensorFlow code" in out.stdout


def test_kdref_verify_prints_the_table_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "kdref.cli", "verify", "logits",
                          "--checks", "golden,agreement,bad_input"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "logits:logit_regression_loss/kdzoo" in out.stdout and "golden:torch" in out.stdout
    assert "checks passed" in out.stdout and "verifying logits" in out.stderr


@pytest.mark.parametrize("args", [["verify", "nosuch"], ["verify", "st", "--checks", "nosuch"]])
def test_kdref_verify_refuses_unknown_names(args):
    out = subprocess.run([sys.executable, "-m", "kdref.cli", *args], capture_output=True, text=True)
    assert out.returncode == 2 and "nosuch" in out.stderr


def test_public_surface():
    assert kdref.methods() == list(METHODS) and {"st", "logits", "dml"} <= set(METHODS)
    assert kdref.get("ST") is METHODS["st"]
    with pytest.raises(ValueError, match=f"unknown method 'nosuch'; implemented: {', '.join(sorted(METHODS))}"):
        kdref.get("nosuch")


def _printed_leaves(value) -> list:
    """The printed numbers of a golden value: a string, or (nested) lists of strings."""
    return [leaf for item in value for leaf in _printed_leaves(item)] if isinstance(value, list) else [value]


@pytest.mark.parametrize("method", list(METHODS.values()), ids=list(METHODS))
def test_golden_file_is_well_formed(method):
    data = json.loads((GOLDEN_DIR / f"{method.name}.json").read_text(encoding="utf-8"))
    assert data["spec"] == f"{method.name}.md" and data["examples"]
    for example in data["examples"]:
        loss = method.loss(example["loss"])
        loss.conventions.canonical(example["convention"])
        values = _printed_leaves(example["value"])
        assert all(isinstance(v, str) for v in values), "golden values keep their printed digits as strings"
        assert example["source"]
