"""kdref.torch — the optimized PyTorch losses, one module per method, mirroring kdref.reference.

Device-agnostic (CPU and CUDA), no Python loops over the batch, stable log-sum-exp, float32
accumulation for half-precision inputs; each function is proven equal to its NumPy reference.
"""

import importlib
import pkgutil

#: one module per method, found in this package (no list to edit when a method is added)
__all__ = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str):
    # ``kdref.torch.st`` after ``import kdref.torch``: each method's module is imported on first use
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
