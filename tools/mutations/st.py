"""Mutants of st: one way at a time of breaking its math (see ``tools/mutants.py``)."""

MUTANTS = [
    ("st/reference: drop T²", "kdref/reference/st.py",
     "return loss * T**2 if temperature_squared else loss", "return loss"),
    ("st/torch: drop T²", "kdref/torch/st.py",
     "return loss * T**2 if temperature_squared else loss", "return loss"),
    ("st/reference: swap student and teacher", "kdref/reference/st.py",
     "log_p = softened_log_probs(v, T)\n    log_q = softened_log_probs(z, T)",
     "log_p = softened_log_probs(z, T)\n    log_q = softened_log_probs(v, T)"),
    ("st/torch: swap student and teacher", "kdref/torch/st.py",
     "log_q = torch.log_softmax(student / T, dim=-1)\n    log_p = torch.log_softmax(teacher / T, dim=-1)",
     "log_q = torch.log_softmax(teacher / T, dim=-1)\n    log_p = torch.log_softmax(student / T, dim=-1)"),
    ("st/reference: elementwise mean instead of batchmean", "kdref/reference/st.py",
     "    return float(np.mean(per_sample))\n", "    return float(np.sum(per_sample) / z.size)\n"),
    ("st/torch: elementwise mean instead of batchmean", "kdref/torch/st.py",
     "    return per_sample.mean()\n\n\ndef _hard",
     "    return per_sample.sum() / (per_sample.numel() * num_classes)\n\n\ndef _hard"),
]
