"""Mutants of fitnet: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("fitnet/reference: no ½", "kdref/reference/fitnet.py",
     "per_sample = np.sum(squared, axis=(1, 2, 3)) * (0.5 if half else 1.0)",
     "per_sample = np.sum(squared, axis=(1, 2, 3)) * 1.0"),
    ("fitnet/torch: no ½", "kdref/torch/fitnet.py", "factor = 0.5 if half else 1.0", "factor = 1.0"),
    ("fitnet/reference: c01b rows taken from H", "kdref/reference/fitnet.py",
     '"sum_rows": n * c * w,', '"sum_rows": n * c * squared.shape[2],'),
    ("fitnet/reference: mse over N·C·H", "kdref/reference/fitnet.py",
     '"mean": squared.size,', '"mean": squared.size // w,'),
    ("fitnet/reference: kernel rule transposed", "kdref/reference/fitnet.py",
     "kernel=(h_s - h_t + 1, w_s - w_t + 1)", "kernel=(w_s - w_t + 1, h_s - h_t + 1)"),
    ("fitnet/torch: teacher not detached", "kdref/torch/fitnet.py",
     "return _reduce(r_s, u_t.detach().to(r_s.dtype), half", "return _reduce(r_s, u_t.to(r_s.dtype), half"),
    ("fitnet/torch: regressor bias dropped", "kdref/torch/fitnet.py",
     "z = F.conv2d(v_g, weight, bias, stride", "z = F.conv2d(v_g, weight, None, stride"),
]
