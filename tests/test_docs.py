"""The documentation site: it builds without a warning, works offline, and shows the spec's numbers.

The site is built once per session (``sphinx-build -W --keep-going -b html``, tutorials executed)
into a temporary directory, or taken from ``$KDREF_DOCS_HTML``; the tests then read the HTML.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kdref.records import METHODS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

def printed_examples(method) -> list[str]:
    """The numbers a method page's conventions table must show: for each loss, what the spec prints
    for the table's worked example (the loss's first golden example without its knobs) under a
    convention, where the example sets no knob but to that convention's own value."""
    values = []
    for loss in method.losses:
        examples = [ex for ex in method.golden["examples"] if ex["loss"] == loss.name]
        knobs = {k.name for k in loss.declaration.knobs}
        worked = {k: v for k, v in examples[0]["args"].items() if k not in knobs}
        for ex in examples:
            preset = loss.declaration.resolve(ex["convention"])
            same_call = {k: v for k, v in ex["args"].items() if k not in knobs} == worked and all(
                preset[k] == v for k, v in ex["args"].items() if k in knobs)
            if same_call and isinstance(ex["value"], str):
                values.append(ex["value"])
    return values


def reference_functions(method) -> list[str]:
    """The functions of the method's reference module (the page includes some of them from source)."""
    module = importlib.import_module(f"kdref.reference.{method.name}")
    return [name for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module.__name__]


class Page(HTMLParser):
    """What the tests need from one HTML page: loaded assets, its text, its conventions tables."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.text: list[str] = []
        self.tables: list[list[str]] = []  # the text of each kdref-conventions table
        self._table_depth = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"])
        if tag == "link" and "stylesheet" in attributes.get("rel", "").split() and attributes.get("href"):
            self.stylesheets.append(attributes["href"])
        if tag == "table":
            if self._table_depth or "kdref-conventions" in attributes.get("class", "").split():
                if not self._table_depth:
                    self.tables.append([])
                self._table_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table_depth:
            self._table_depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._table_depth:
            self.tables[-1].append(data)

    @property
    def plain_text(self) -> str:
        return " ".join("".join(self.text).split())


def is_remote(url: str) -> bool:
    return bool(re.match(r"(?i)^\s*(https?:)?//", url))


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The built site: ``$KDREF_DOCS_HTML`` when ``scripts/test`` has just built it with ``-W``,
    else a fresh build here."""
    if os.environ.get("KDREF_DOCS_HTML"):
        return Path(os.environ["KDREF_DOCS_HTML"])
    out = tmp_path_factory.mktemp("docs") / "html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    if build.returncode != 0:
        pytest.fail(f"sphinx-build exited with {build.returncode}\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}")
    return out


@pytest.fixture(scope="session")
def pages(site) -> dict[Path, Page]:
    return {path: Page(path.read_text(encoding="utf-8")) for path in sorted(site.rglob("*.html"))}


def test_site_has_every_page(site):
    for name in ["index", "conventions", "proof", "api", "tutorials/which_kd_loss",
                 *(f"methods/{m}" for m in METHODS)]:
        assert (site / f"{name}.html").is_file(), f"{name}.html was not built"


def test_no_script_or_stylesheet_from_the_network(site, pages):
    remote = [f"{path.relative_to(site)}: {url}" for path, page in pages.items()
              for url in page.scripts + page.stylesheets if is_remote(url)]
    assert not remote, "pages load remote assets:\n" + "\n".join(remote)
    imports = []
    for css in site.rglob("*.css"):
        for match in re.finditer(r"@import\s+(?:url\()?\s*['\"]?([^'\")\s;]+)", css.read_text(encoding="utf-8")):
            if is_remote(match.group(1)):
                imports.append(f"{css.relative_to(site)}: {match.group(1)}")
        for match in re.finditer(r"url\(\s*['\"]?([^'\")\s]+)", css.read_text(encoding="utf-8")):
            if is_remote(match.group(1)):
                imports.append(f"{css.relative_to(site)}: {match.group(1)}")
    assert not imports, "stylesheets fetch from the network:\n" + "\n".join(imports)


def test_mathjax_is_bundled(site, pages):
    referenced = {(path.parent / src).resolve() for path, page in pages.items()
                  for src in page.scripts if "mathjax" in src.lower()}
    assert referenced, "no page loads MathJax"
    for script in referenced:
        assert script.is_file(), f"pages load {script}, which is not in the build"
        assert site.resolve() in script.parents
    # MathJax loads its fonts relative to its own script
    fonts = site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert any(fonts.glob("*.woff")), f"no MathJax fonts in {fonts}"


@pytest.mark.parametrize("method", list(METHODS))
def test_method_page_shows_conventions_and_code(site, pages, method):
    page = pages[site / "methods" / f"{method}.html"]
    assert page.tables, f"methods/{method}.html has no conventions table"
    tables = " ".join(" ".join("".join(t).split()) for t in page.tables)
    printed = printed_examples(METHODS[method])
    assert printed, f"no worked example of {method} is printed in its conventions table"
    for value in printed:
        assert value in tables, f"{value} is not in the conventions table of methods/{method}.html"
    included = [f for f in reference_functions(METHODS[method]) if f"def {f}(" in page.plain_text]
    assert included, f"methods/{method}.html includes no function of kdref/reference/{method}.py from the source"
    assert 'class="math' in (site / "methods" / f"{method}.html").read_text(encoding="utf-8")


def test_tutorial_was_executed(site, pages):
    page = pages[site / "tutorials" / "which_kd_loss.html"]
    assert "17.76653" in page.plain_text and "0.018034938" in page.plain_text
    assert any((site / "_images").glob("*.png")), "the tutorial's plot is missing"
