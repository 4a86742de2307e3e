"""Mutants of logits: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("logits/reference: drop the ½", "kdref/reference/logits.py",
     'SCALE_FACTORS = {"half": lambda C: 0.5,', 'SCALE_FACTORS = {"half": lambda C: 1.0,'),
    ("logits/torch: no centring", "kdref/torch/logits.py",
     "residual = residual - residual.mean(dim=-1, keepdim=True)", "residual = residual"),
]
