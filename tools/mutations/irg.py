"""Mutants of irg: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("irg/reference: edges on distances, not squared distances", "kdref/reference/irg.py",
     "    A = pairwise_sq_distances(f)\n", "    A = np.sqrt(pairwise_sq_distances(f))\n"),
    ("irg/torch: edges on distances, not squared distances", "kdref/torch/irg.py",
     "    A = pairwise_sq_distances(f)\n", "    A = pairwise_sq_distances(f).sqrt()\n"),
    ("irg/reference: no max normalisation", "kdref/reference/irg.py",
     'return normalize_by_max(a) if normalize == "max" else a', "return a"),
    ("irg/torch: no max normalisation", "kdref/torch/irg.py",
     'return normalize_by_max(a, detach=caffe_gradients) if normalize == "max" else a', "return a"),
    ("irg/torch: one-to-many guided by the first teacher layer", "kdref/torch/irg.py",
     "guides = [normalized(edges(teacher[-1]))] * len(student)",
     "guides = [normalized(edges(teacher[0]))] * len(student)"),
    ("irg/torch: teacher not detached", "kdref/torch/irg.py",
     "teacher = [f.detach().to(dtype) for f in teacher]", "teacher = [f.to(dtype) for f in teacher]"),
    ("irg/torch: Caffe edge gradient not halved", "kdref/torch/irg.py",
     "return 0.5 * a + 0.5 * a.detach()", "return a"),
    ("irg/reference: Caffe num = entries", "kdref/reference/irg.py",
     "return total / (2.0 * squared_differences.shape[0])", "return total / (2.0 * squared_differences.size)"),
    ("irg/torch: no power-of-two rescaling", "kdref/torch/irg.py",
     'rescale = normalize == "max" and eps == 0', "rescale = False"),
]
