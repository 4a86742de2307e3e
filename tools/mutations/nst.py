"""Mutants of nst: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("nst/torch: no teacher-teacher term", "kdref/torch/nst.py",
     "teacher_term=teacher_term, uniform=", "teacher_term=False, uniform="),
    ("nst/reference: no teacher-teacher term", "kdref/reference/nst.py",
     "return weighted_sum(wx, x, x, wx) + student if teacher_term else student", "return student"),
    ("nst/reference: λ instead of λ/2", "kdref/reference/nst.py",
     "factor = lam / 2.0 if half else lam", "factor = lam"),
    ("nst/torch: normalise over channels instead of positions", "kdref/torch/nst.py",
     "return l2_normalize(fm.flatten(2), dim=-1, eps=eps, eps_mode=eps_mode)",
     "return l2_normalize(fm.flatten(2), dim=1, eps=eps, eps_mode=eps_mode)"),
    ("nst/torch: gaussian with σ² for 2σ²", "kdref/torch/nst.py",
     "return distance.clamp_min_(0.0).div_(-2.0 * sigma2).exp_()",
     "return distance.clamp_min_(0.0).div_(-sigma2).exp_()"),
    ("nst/torch: custom backward without the factor d", "kdref/torch/nst.py", ".pow_(d - 1).mul_(d)", ".pow_(d - 1)"),
    ("nst/torch: teacher not detached", "kdref/torch/nst.py", "teacher.detach().to(dtype)", "teacher.to(dtype)"),
]
