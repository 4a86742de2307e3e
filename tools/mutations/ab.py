"""Mutants of ab: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("ab/reference: a teacher response of 0 is active", "kdref/reference/ab.py",
     "return (x > 0).astype(x.dtype)", "return (x >= 0).astype(x.dtype)"),
    ("ab/torch: a teacher response of 0 is active", "kdref/torch/ab.py",
     "signed = torch.where(t.detach() > 0, s, -s)", "signed = torch.where(t.detach() >= 0, s, -s)"),
    ("ab/torch: hinge not squared", "kdref/torch/ab.py",
     "return F.relu(margin - signed).square().sum(dim=(1, 2, 3))", "return F.relu(margin - signed).sum(dim=(1, 2, 3))"),
    ("ab/reference: KD-Zoo's mean over N·C only", "kdref/reference/ab.py",
     '"mean": s.size, "sum": 1}', '"mean": s.shape[0] * s.shape[1], "sum": 1}'),
    ("ab/reference: depth weights deepest first", "kdref/reference/ab.py",
     "return 2.0 ** -np.arange(count - 1, -1, -1, dtype=np.float64)",
     "return 2.0 ** -np.arange(count, dtype=np.float64)"),
    ("ab/torch: depth weights deepest first", "kdref/torch/ab.py",
     'd = 2.0 ** -(count - 1 - k) if layer_weights == "depth" else 1.0',
     'd = 2.0 ** -k if layer_weights == "depth" else 1.0'),
    # (dropping the conv bias would be an equivalent mutant: batch-statistics BatchNorm cancels it)
    ("ab/torch: BatchNorm's β dropped", "kdref/torch/ab.py",
     'cast("bn_weight"), cast("bn_bias"), training=True', 'cast("bn_weight"), None, training=True'),
    ("ab/torch: BatchNorm's γ gets no gradient", "kdref/torch/ab.py",
     'F.batch_norm(z, None, None, cast("bn_weight"), cast("bn_bias")',
     'F.batch_norm(z, None, None, cast("bn_weight").detach(), cast("bn_bias")'),
    ("ab/reference: BatchNorm with the unbiased variance", "kdref/reference/ab.py",
     "var = np.mean((z - mean) ** 2, axis=(0, 2, 3), keepdims=True)",
     "var = np.var(z, axis=(0, 2, 3), keepdims=True, ddof=1)"),
]
