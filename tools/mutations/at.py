"""Mutants of at: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("at/reference: no normalisation", "kdref/reference/at.py",
     "return l2_normalize(Q.reshape(Q.shape[0], -1), axis=1, eps=eps, eps_mode=eps_mode)",
     "return Q.reshape(Q.shape[0], -1)"),
    ("at/torch: no normalisation", "kdref/torch/at.py",
     "return l2_normalize(Q.flatten(1), dim=1, eps=eps, eps_mode=eps_mode)", "return Q.flatten(1)"),
    ("at/reference: β instead of β/2", "kdref/reference/at.py",
     "return beta / 2 if halve_beta else beta", "return beta"),
    ("at/torch: squared norm in the paper distance", "kdref/torch/at.py",
     "return torch.linalg.vector_norm(delta, ord=p_norm, dim=1)", "return delta.square().sum(dim=1)"),
    ("at/torch: custom backward without the 2", "kdref/torch/at.py",
     "return (A * (2 * grad).unsqueeze(1)).to(A.dtype), None", "return (A * grad.unsqueeze(1)).to(A.dtype), None"),
    ("at/torch: teacher not detached", "kdref/torch/at.py",
     "attention_pair(fm_s, fm_t.detach(),", "attention_pair(fm_s, fm_t,"),
    ("at/reference: no abs in the map", "kdref/reference/at.py",
     "powered = (np.abs(A) if use_abs else A) ** p", "powered = A ** p"),
    ("at/reference: multi-layer mean forgets to divide", "kdref/reference/at.py",
     "        total = total / len(fms_s)\n", "        total = total\n"),
]
