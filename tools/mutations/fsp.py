"""Mutants of fsp: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("fsp/reference: Gram not divided by h·w", "kdref/reference/fsp.py",
     'return np.einsum("nihw,njhw->nij", f1, f2) / (h * w)', 'return np.einsum("nihw,njhw->nij", f1, f2)'),
    ("fsp/torch: Gram not divided by h·w", "kdref/torch/fsp.py",
     "f2.reshape(n, f2.shape[1], h * w).transpose(1, 2)) / (h * w)",
     "f2.reshape(n, f2.shape[1], h * w).transpose(1, 2))"),
    ("fsp/torch: pairs always summed", "kdref/torch/fsp.py",
     'torch.stack(terms).sum(dim=0) if pair_reduction == "sum" else torch.stack(terms).mean(dim=0)',
     "torch.stack(terms).sum(dim=0)"),
    ("fsp/torch: column norm over the wrong axis", "kdref/torch/fsp.py",
     "torch.linalg.vector_norm(delta, dim=1).sum(dim=1)", "torch.linalg.vector_norm(delta, dim=2).sum(dim=1)"),
    ("fsp/torch: always average pooling", "kdref/torch/fsp.py",
     "else adaptive_pool2d(x, size, pool) for x in (f1, f2))",
     'else adaptive_pool2d(x, size, "avg") for x in (f1, f2))'),
    ("fsp/torch: teacher not detached", "kdref/torch/fsp.py", "f1, f2 = f1.detach(), f2.detach()", "pass"),
    ("fsp/reference: λ ignored", "kdref/reference/fsp.py",
     "terms.append(lam * fsp_distance(", "terms.append(fsp_distance("),
]
