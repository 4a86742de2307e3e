"""kdref.reference — the NumPy oracle: one module per method, written to read like the paper.

Imports NumPy only, never torch, so it serves as a correctness oracle for code in any framework.
"""

from kdref.reference import at, cc, dml, fitnet, fsp, irg, logits, nst, pkt, rkd, sp, st

__all__ = ["at", "cc", "dml", "fitnet", "fsp", "irg", "logits", "nst", "pkt", "rkd", "sp", "st"]
