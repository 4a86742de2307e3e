"""Mutants of rkd: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("rkd/reference: angle without normalising the edges", "kdref/reference/rkd.py",
     "e = np.divide(edges, lengths, out=np.zeros_like(edges), where=lengths > 0)", "e = edges"),
    ("rkd/torch: angle without normalising the edges", "kdref/torch/rkd.py",
     "return cos.sub_(d2).mul_(0.5 * u[:, :, None]).mul_(u[:, None, :])", "return cos.sub_(d2).mul_(0.5)"),
    ("rkd/torch: backward without the d²_ik slot", "kdref/torch/rkd.py",
     'across = torch.einsum("jik,ji,jk->ik", g, u, u)', "across = torch.zeros_like(d2_s)"),
    ("rkd/torch: zero-length edges not masked", "kdref/torch/rkd.py",
     "return torch.where(positive, torch.where(positive, d2, 1.0).rsqrt(), 0.0)",
     "return d2.clamp_min(1e-24).rsqrt()"),
    ("rkd/reference: μ over all N² entries", "kdref/reference/rkd.py",
     'counted = off_diagonal if mu == "offdiag" else d > 0', "counted = np.ones_like(d, dtype=bool)"),
    ("rkd/torch: i = k triplets summed under paper", "kdref/torch/rkd.py",
     "                terms.diagonal(dim1=1, dim2=2).zero_()\n", "                pass\n"),
    ("rkd/torch: teacher not detached", "kdref/torch/rkd.py",
     "distance_potential(t.detach(), **potential)", "distance_potential(t, **potential)"),
]
