"""Mutants of dml: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("dml/reference: drop 1/(K-1)", "kdref/reference/dml.py",
     'return total / len(z_peers) if peer_reduction == "mean" else total', "return total"),
    ("dml/torch: drop 1/(K-1)", "kdref/torch/dml.py",
     'return kl.mean(dim=0) if peer_reduction == "mean" else kl.sum(dim=0)', "return kl.sum(dim=0)"),
]
