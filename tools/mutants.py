"""Mutation run: break the math one way at a time and check that the test suite turns red.

Each mutant is a (file, original text, replacement) edit. For each, the repository is copied to
a temporary directory, the edit applied, and the proof tests run there; a mutant that leaves
the suite green is a hole in the proof. Usage::

    .venv/bin/python tools/mutants.py            # all mutants
    .venv/bin/python tools/mutants.py st         # those whose name starts with "st"

Not part of the test suite (it runs the suite once per mutant); the results go in the closing
note of the change that adds a method.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MUTANTS = [
    ("st/reference: drop T²", "kdref/reference/st.py",
     'return loss * T**2 if knobs["temperature_squared"] else loss', "return loss"),
    ("st/torch: drop T²", "kdref/torch/st.py",
     'return loss * T**2 if knobs["temperature_squared"] else loss', "return loss"),
    ("st/reference: swap student and teacher", "kdref/reference/st.py",
     "log_p = softened_log_probs(teacher, T)\n    log_q = softened_log_probs(student, T)",
     "log_p = softened_log_probs(student, T)\n    log_q = softened_log_probs(teacher, T)"),
    ("st/torch: swap student and teacher", "kdref/torch/st.py",
     "log_q = torch.log_softmax(student / T, dim=-1)\n    log_p = torch.log_softmax(teacher / T, dim=-1)",
     "log_q = torch.log_softmax(teacher / T, dim=-1)\n    log_p = torch.log_softmax(student / T, dim=-1)"),
    ("st/reference: elementwise mean instead of batchmean", "kdref/reference/st.py",
     "    return float(np.mean(per_sample))\n", "    return float(np.sum(per_sample) / student.size)\n"),
    ("st/torch: elementwise mean instead of batchmean", "kdref/torch/st.py",
     "    return per_sample.mean()\n\n\ndef _hard",
     "    return per_sample.sum() / (per_sample.numel() * num_classes)\n\n\ndef _hard"),
    ("dml/reference: drop 1/(K-1)", "kdref/reference/dml.py",
     'return total / len(z_peers) if knobs["peer_reduction"] == "mean" else total', "return total"),
    ("dml/torch: drop 1/(K-1)", "kdref/torch/dml.py",
     'return kl.mean(dim=0) if knobs["peer_reduction"] == "mean" else kl.sum(dim=0)', "return kl.sum(dim=0)"),
    ("logits/reference: drop the ½", "kdref/reference/logits.py",
     'SCALE_FACTORS = {"half": lambda C: 0.5,', 'SCALE_FACTORS = {"half": lambda C: 1.0,'),
    ("logits/torch: no centring", "kdref/torch/logits.py",
     "residual = residual - residual.mean(dim=-1, keepdim=True)", "residual = residual"),
    ("at/reference: no normalisation", "kdref/reference/at.py",
     "return l2_normalize(Q.reshape(Q.shape[0], -1), axis=1, eps=eps, eps_mode=eps_mode)",
     "return Q.reshape(Q.shape[0], -1)"),
    ("at/torch: no normalisation", "kdref/torch/at.py",
     "return l2_normalize(Q.flatten(1), dim=1, eps=eps, eps_mode=eps_mode)", "return Q.flatten(1)"),
    ("at/reference: β instead of β/2", "kdref/reference/at.py",
     'return beta / 2 if knobs["halve_beta"] else beta', "return beta"),
    ("at/torch: squared norm in the paper distance", "kdref/torch/at.py",
     "return torch.linalg.vector_norm(delta, ord=p_norm, dim=1)", "return delta.square().sum(dim=1)"),
    ("at/torch: custom backward without the 2", "kdref/torch/at.py",
     "return (A * (2 * grad).unsqueeze(1)).to(A.dtype), None", "return (A * grad.unsqueeze(1)).to(A.dtype), None"),
    ("at/torch: teacher not detached", "kdref/torch/at.py", "return fm_s, fm_t.detach()", "return fm_s, fm_t"),
    ("at/reference: no abs in the map", "kdref/reference/at.py",
     "powered = (np.abs(A) if use_abs else A) ** p", "powered = A ** p"),
    ("at/reference: multi-layer mean forgets to divide", "kdref/reference/at.py",
     "        total = total / len(fms_s)\n", "        total = total\n"),
    ("nst/torch: no teacher-teacher term", "kdref/torch/nst.py",
     'teacher_term=knobs["teacher_term"],', "teacher_term=False,"),
    ("nst/reference: no teacher-teacher term", "kdref/reference/nst.py",
     "return weighted_sum(wx, x, x, wx) + student if teacher_term else student", "return student"),
    ("nst/reference: λ instead of λ/2", "kdref/reference/nst.py",
     'factor = lam / 2.0 if knobs["half"] else lam', "factor = lam"),
    ("nst/torch: normalise over channels instead of positions", "kdref/torch/nst.py",
     "return l2_normalize(fm.flatten(2), dim=-1, eps=eps, eps_mode=eps_mode)",
     "return l2_normalize(fm.flatten(2), dim=1, eps=eps, eps_mode=eps_mode)"),
    ("nst/torch: gaussian with σ² for 2σ²", "kdref/torch/nst.py",
     "return distance.clamp_min_(0.0).div_(-2.0 * sigma2).exp_()",
     "return distance.clamp_min_(0.0).div_(-sigma2).exp_()"),
    ("nst/torch: custom backward without the factor d", "kdref/torch/nst.py", ".pow_(d - 1).mul_(d)", ".pow_(d - 1)"),
    ("nst/torch: teacher not detached", "kdref/torch/nst.py", "teacher.detach().to(dtype)", "teacher.to(dtype)"),
    ("fsp/reference: Gram not divided by h·w", "kdref/reference/fsp.py",
     'return np.einsum("nihw,njhw->nij", f1, f2) / (h * w)', 'return np.einsum("nihw,njhw->nij", f1, f2)'),
    ("fsp/torch: Gram not divided by h·w", "kdref/torch/fsp.py",
     "f2.reshape(n, f2.shape[1], h * w).transpose(1, 2)) / (h * w)",
     "f2.reshape(n, f2.shape[1], h * w).transpose(1, 2))"),
    ("fsp/torch: pairs always summed", "kdref/torch/fsp.py",
     'torch.stack(terms).sum(dim=0) if knobs["pair_reduction"] == "sum" else torch.stack(terms).mean(dim=0)',
     "torch.stack(terms).sum(dim=0)"),
    ("fsp/torch: column norm over the wrong axis", "kdref/torch/fsp.py",
     "torch.linalg.vector_norm(delta, dim=1).sum(dim=1)", "torch.linalg.vector_norm(delta, dim=2).sum(dim=1)"),
    ("fsp/torch: always average pooling", "kdref/torch/fsp.py",
     "else adaptive_pool2d(x, size, pool) for x in (f1, f2))",
     'else adaptive_pool2d(x, size, "avg") for x in (f1, f2))'),
    ("fsp/torch: teacher not detached", "kdref/torch/fsp.py", "f1, f2 = f1.detach(), f2.detach()", "pass"),
    ("fsp/reference: λ ignored", "kdref/reference/fsp.py",
     "terms.append(lam * fsp_distance(", "terms.append(fsp_distance("),
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
     "return _reduce(r_s, u_t.detach().to(r_s.dtype), knobs", "return _reduce(r_s, u_t.to(r_s.dtype), knobs"),
    ("fitnet/torch: regressor bias dropped", "kdref/torch/fitnet.py",
     "z = F.conv2d(v_g, weight, bias, stride", "z = F.conv2d(v_g, weight, None, stride"),
]


def run(name: str, path: str, old: str, new: str) -> tuple[bool, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "docs", "__pycache__"))
        target = copy / path
        text = target.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{name}: the original text occurs {text.count(old)} times in {path}")
        target.write_text(text.replace(old, new))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                               "tests/test_proof.py", "tests/test_harness_can_fail.py", "--doctest-modules",
                               "kdref"], cwd=copy, capture_output=True, text=True,
                              env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
        failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        return proc.returncode != 0, time.perf_counter() - start, (failed or [""])[0][:150]


def main() -> int:
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""
    # the control: an unmutated copy must pass, or every "kill" below would mean nothing
    failed, seconds, _ = run("control", "kdref/__init__.py", '__version__ = "', '__version__ = "')
    if failed:
        print(f"the unmutated copy fails its tests ({seconds:.0f} s): fix that first")
        return 2
    print(f"control passes ({seconds:.0f} s)", flush=True)
    survivors = 0
    for name, path, old, new in MUTANTS:
        if not name.startswith(prefix):
            continue
        killed, seconds, first_failure = run(name, path, old, new)
        survivors += not killed
        print(f"{'killed ' if killed else 'SURVIVED'}  {name}  ({seconds:.0f} s)  {first_failure}", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
