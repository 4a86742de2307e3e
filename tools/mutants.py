"""Mutation run: break the math one way at a time and check that the test suite turns red.

Each mutant is a (file, original text, replacement) edit. For each, the repository is copied to
a temporary directory, the edit applied, and the tests that guard the file run there (a method's
module: its generic proof, its own test file and its doctests; anything else: the whole proof); a
mutant that leaves them green is a hole in the proof. Usage::

    .venv/bin/python tools/mutants.py            # all mutants
    .venv/bin/python tools/mutants.py st         # those whose name starts with "st"
    .venv/bin/python tools/mutants.py --jobs 2   # two mutants at a time (same order of output)

Not part of the test suite (it runs the suite once per mutant); the results go in the closing
note of the change that adds a method.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
    ("dml/reference: drop 1/(K-1)", "kdref/reference/dml.py",
     'return total / len(z_peers) if peer_reduction == "mean" else total', "return total"),
    ("dml/torch: drop 1/(K-1)", "kdref/torch/dml.py",
     'return kl.mean(dim=0) if peer_reduction == "mean" else kl.sum(dim=0)', "return kl.sum(dim=0)"),
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
    ("sp/reference: no row normalisation", "kdref/reference/sp.py",
     "    return g / np.maximum(norms, eps)\n", "    return g\n"),
    ("sp/torch: no row normalisation", "kdref/torch/sp.py",
     "        return g / divisors\n    return g * (1.0 / divisors)", "        return g\n    return g"),
    ("sp/reference: p ignored (always ℓ2)", "kdref/reference/sp.py",
     "    norms = np.sum(np.abs(g) ** p, axis=1, keepdims=True) ** (1.0 / p)\n",
     "    norms = np.sqrt(np.sum(g ** 2, axis=1, keepdims=True))\n"),
    ("sp/reference: layers summed instead of averaged", "kdref/reference/sp.py",
     '    return total / len(terms) if layer_reduction == "mean" else total\n', "    return total\n"),
    ("sp/torch: layers summed instead of averaged", "kdref/torch/sp.py",
     '        return total / len(terms) if layer_reduction == "mean" else total\n', "        return total\n"),
    ("sp/torch: diagonal dropped", "kdref/torch/sp.py", "    total = (g_t - g_s).square().sum()\n",
     "    total = (g_t - g_s).square().sum() - (g_t - g_s).diagonal().square().sum()\n"),
    ("sp/torch: zero-row gradient not masked", "kdref/torch/sp.py",
     "        divisors = torch.where(norms > 0, divisors, torch.full_like(divisors, torch.inf))\n",
     "        divisors = divisors\n"),
    ("sp/torch: teacher not detached", "kdref/torch/sp.py", "s, t = s.to(dtype), t.detach().to(dtype)",
     "s, t = s.to(dtype), t.to(dtype)"),
    ("sp/torch: products under autocast", "kdref/torch/sp.py",
     "    with torch.autocast(device_type=q_s[0].device.type, enabled=False):\n", "    if True:\n"),
    ("sp/torch: trace-form cosine not masked", "kdref/torch/sp.py",
     "    cosine = torch.where(both, cross / (m_t * m_s), torch.zeros_like(cross))\n",
     "    cosine = cross / (m_t * m_s)\n"),
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
    ("cc/reference: Taylor coefficient without 1/p!", "kdref/reference/cc.py",
     "(2.0 * gamma) ** p / math.factorial(p)", "(2.0 * gamma) ** p"),
    ("cc/torch: Taylor coefficient without 1/p!", "kdref/torch/cc.py", "(2.0 * gamma / p)", "(2.0 * gamma)"),
    ("cc/reference: Taylor coefficient γ^p instead of (2γ)^p", "kdref/reference/cc.py",
     "(2.0 * gamma) ** p / math.factorial(p)", "gamma ** p / math.factorial(p)"),
    ("cc/torch: Taylor coefficient γ^p instead of (2γ)^p", "kdref/torch/cc.py", "(2.0 * gamma / p)", "(gamma / p)"),
    ("cc/reference: torchdistill's Frobenius norm squared", "kdref/reference/cc.py",
     'distance = squared if norm == "fro_sq" else math.sqrt(squared)', "distance = squared"),
    ("cc/torch: mean over n instead of n²", "kdref/torch/cc.py",
     "distance / difference.numel()", "distance / difference.shape[0]"),
    ("cc/torch: teacher not detached", "kdref/torch/cc.py",
     "C_T = correlation_matrix(teacher.detach().to(dtype)", "C_T = correlation_matrix(teacher.to(dtype)"),
    ("cc/torch: zero row not masked", "kdref/torch/cc.py",
     "return torch.where(length >= eps, unit, unit.detach())", "return unit"),
    ("cc/torch: adjacent mean over n, not n − 1", "kdref/torch/cc.py",
     "residuals.mean() if", "residuals.sum() / student.shape[0] if"),
    ("cc/reference: pairs (i, i + 2)", "kdref/reference/cc.py",
     "np.sum(delta[:-1] * delta[1:], axis=1)", "np.sum(delta[:-2] * delta[2:], axis=1)"),
    ("cc/torch: normalise over the batch", "kdref/torch/cc.py",
     "torch.linalg.vector_norm(F, dim=1, keepdim=True)", "torch.linalg.vector_norm(F, dim=0, keepdim=True)"),
    ("cc/torch: exact Gaussian without γ", "kdref/torch/cc.py",
     "torch.exp(-gamma * _sq_distances(F))", "torch.exp(-_sq_distances(F))"),
    ("cc/torch: exact Gaussian from uncentred rows", "kdref/torch/cc.py",
     "centred = F - F.mean(dim=0, keepdim=True)", "centred = F"),
    ("cc/reference: exact Gaussian with 2γ", "kdref/reference/cc.py",
     "np.exp(-gamma * pairwise_sq_distances(F))", "np.exp(-2 * gamma * pairwise_sq_distances(F))"),
    ("cc/torch: plain √ at the kink", "kdref/torch/cc.py",
     "distance = torch.where(matched, squared, torch.where(matched, torch.ones_like(squared), squared).sqrt())",
     "distance = squared.sqrt()"),
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


def guards(paths: list[str]) -> list[str]:
    """pytest's arguments for the tests that stand guard over ``paths``: for methods' modules, the
    generic proof of those methods, their own test files and the modules' doctests; for anything
    else, the whole proof. The control runs the guards of every file the mutants touch."""
    methods = sorted({Path(path).stem for path in paths})
    own = [f"tests/test_{m}.py" for m in methods if (ROOT / "tests" / f"test_{m}.py").is_file()]
    if len(own) == len(methods) and all(Path(path).parent.name in ("reference", "torch") for path in paths):
        # "<m>.py" keeps the module's doctests, which the other two words would deselect
        words = " or ".join(f"{m}: or test_{m} or {m}.py" for m in methods)
        return ["tests/test_proof.py", "-k", words, *own, "--doctest-modules", *paths]
    return ["tests/test_proof.py", "tests/test_harness_can_fail.py", *own, "--doctest-modules", *paths]


def run(base: Path, tests: list[str], threads: int, path: str = "", old: str = "",
        new: str = "") -> tuple[bool, float, str]:
    """Runs ``tests`` in a copy of ``base`` with ``old`` replaced by ``new`` in ``path``: red or
    green, seconds, the first failure."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(base, copy)
        if path:
            target = copy / path
            target.write_text(target.read_text().replace(old, new))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=copy, capture_output=True, text=True,
                              env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(threads)})
        failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        return proc.returncode != 0, time.perf_counter() - start, (failed or [""])[0][:150]


def mutation_run(base: Path, mutants: list[tuple[str, str, str, str]], jobs: int) -> int:
    stale = [f"{name}: the original text occurs {count} times in {path}" for name, path, old, _ in mutants
             if (count := (base / path).read_text().count(old)) != 1]
    if stale:  # all of them at once, before anything runs
        print("\n".join(stale))
        return 2
    threads = max(1, (os.cpu_count() or 1) // jobs)  # BLAS/OpenMP threads per test run: no oversubscription
    wall = time.perf_counter()
    # the control: an unmutated copy must pass the same tests, or every "kill" below would mean nothing
    failed, seconds, first_failure = run(base, guards(sorted({path for _, path, _, _ in mutants})), threads)
    if failed:
        print(f"the unmutated copy fails its tests ({seconds:.0f} s): fix that first  {first_failure}")
        return 2
    print(f"control passes ({seconds:.0f} s)", flush=True)
    survivors = 0
    with ThreadPoolExecutor(jobs) as pool:  # map yields the results in the order of the list
        for (name, *_), (killed, seconds, first_failure) in zip(
                mutants, pool.map(lambda m: run(base, guards([m[1]]), threads, *m[1:]), mutants), strict=True):
            survivors += not killed
            print(f"{'killed ' if killed else 'SURVIVED'}  {name}  ({seconds:.0f} s)  {first_failure}", flush=True)
    print(f"{len(mutants) - survivors} killed, {survivors} survived, {time.perf_counter() - wall:.0f} s in all")
    return 1 if survivors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Mutation run of the proof (see the module docstring).")
    parser.add_argument("prefix", nargs="?", default="", help="run only the mutants whose name starts with it")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time, each in its own copy")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if m[0].startswith(args.prefix)]
    if not mutants:
        print(f"no mutant's name starts with {args.prefix!r}")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        # one snapshot of the working tree: edits made while the run goes on do not reach it
        base = Path(tmp) / "repo"
        shutil.copytree(ROOT, base, ignore=shutil.ignore_patterns(".venv", ".git", "docs", "__pycache__"))
        return mutation_run(base, mutants, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
