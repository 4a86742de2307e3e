"""Sphinx configuration of the kdref documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``. The site must work
offline: MathJax is bundled (``sphinx-mathjax-offline``) and nothing is loaded from a CDN.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(DOCS / "_ext"), str(ROOT)]

import kdref  # noqa: E402  (needs the paths above when kdref is not installed)

project = "kdref"
author = "The kdref authors"
copyright = "the kdref authors"
release = version = kdref.__version__

extensions = [
    "myst_parser",
    "nbsphinx",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax; sets mathjax_path
    "kdref_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# -- MyST ------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc ---------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# -- the tutorials: executed at build time, on this interpreter, offline ----------------------
# nbsphinx reads notebooks only inside the source directory, so the notebooks of tutorials/
# are copied here at build time (docs/tutorials/ is git-ignored; the originals stay the source).
TUTORIALS = DOCS / "tutorials"
TUTORIALS.mkdir(exist_ok=True)
for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
    target = TUTORIALS / notebook.name
    if not target.exists() or target.read_bytes() != notebook.read_bytes():
        shutil.copy2(notebook, target)

nbsphinx_execute = "always"
# the notebook kernel is a subprocess: let it import this checkout's kdref even when not installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
nbsphinx_kernel_name = "python3"  # jupyter_client runs ipykernel's "python" with sys.executable
nbsphinx_timeout = 120
nbsphinx_allow_errors = False
nbsphinx_requirejs_path = ""  # the default loads require.js from a CDN; no widget needs it here
nbsphinx_widgets_path = ""
# nbsphinx converts Markdown cells with pandoc; use the one pypandoc_binary ships if none is on PATH
if shutil.which("pandoc") is None:
    try:
        import pypandoc

        os.environ["PATH"] = os.pathsep.join([str(Path(pypandoc.get_pandoc_path()).parent), os.environ["PATH"]])
    except (ImportError, OSError):
        pass

# -- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "Reference implementations of the classic knowledge-distillation losses",
    "page_width": "1240px",
    "body_max_width": "none",
    "sidebar_width": "230px",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_static_path = ["_static"]
html_css_files = ["kdref.css"]
html_title = f"kdref {release}"
html_show_sourcelink = False
