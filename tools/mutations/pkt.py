"""Mutants of pkt: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("pkt/reference: the paper keeps the self-pairs", "kdref/reference/pkt.py",
     "    P = conditional_probabilities(", "    include_self = True\n    P = conditional_probabilities("),
    ("pkt/reference: the official code drops the self-pairs", "kdref/reference/pkt.py",
     "    P = conditional_probabilities(", "    include_self = False\n    P = conditional_probabilities("),
    ("pkt/torch: the paper keeps the self-pairs", "kdref/torch/pkt.py",
     "include = include_self\n", "include = True\n"),
    ("pkt/torch: the official code drops the self-pairs", "kdref/torch/pkt.py",
     "include = include_self\n", "include = False\n"),
    ("pkt/torch: the paper's normaliser keeps the diagonal", "kdref/torch/pkt.py",
     "s = s - K.reshape(-1)[:: n + 1]", "s = s"),
    ("pkt/reference: KL with the student first", "kdref/reference/pkt.py",
     "per_anchor = kl_per_anchor(P, Q, eps)", "per_anchor = kl_per_anchor(Q, P, eps)"),
    ("pkt/torch: no ε in the log", "kdref/torch/pkt.py",
     "inner = torch.log(K + eps * s.unsqueeze(1))", "inner = torch.log(K)"),
    ("pkt/torch: uniform row normalised by 1 instead of N − 1", "kdref/torch/pkt.py",
     "torch.full_like(s, max(n - 1, 1))", "torch.ones_like(s)"),
    ("pkt/reference: the paper's mean over N²", "kdref/reference/pkt.py",
     "return n * n if include_self else n * (n - 1)", "return n * n"),
]
