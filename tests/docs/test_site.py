"""The documentation site as its readers meet it: `mkdocs build --strict` passes (no broken link or
anchor, no page left out of the navigation), every console script has its page with every option of its
parser, every config group under conf/ has its page with every key, and the README stays a front door
(at most 10,000 characters, its two set-up commands, links that resolve). Then headless Chromium opens
the built site, served over HTTP as `mkdocs serve` would, and finds the navigation and the search box on
the home page and on a generated reference page, and a search that answers.

The site is built once for the module (about 2 s); screenshots go to the build's tmp dir.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")
README_MAX_CHARS = 10_000
MIN_PAGES = 8
BUILD_TIMEOUT_S = 120


@functools.cache
def load_hook():
    """docs/hooks/reference.py, the generator of the reference pages (it is no package module)."""
    name = "docs_reference_hook"
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Site:
    root: Path
    log: str

    def text(self, page: str) -> str:
        """A built page's text, tags stripped and entities decoded ('reference/cli/phiscale-eval')."""
        path = self.root / page / "index.html"
        assert path.is_file(), f"no page {page}/ in the built site: {sorted(p.name for p in path.parent.parent.iterdir())}"
        return html.unescape(re.sub(r"<[^>]+>", " ", path.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    if not MKDOCS.exists():
        pytest.fail(f"mkdocs not found at {MKDOCS}: pip install -e '.[docs]' (scripts/setup.sh does)")
    out = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_S, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return Site(out, result.stderr)


def console_scripts() -> dict[str, str]:
    return load_hook().console_scripts()


def option_strings(parser) -> list[str]:
    """Every option of a parser and of its subcommands' parsers."""
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += option_strings(sub)
        found += [s for s in action.option_strings if s not in ("-h", "--help")]
    return found


def flat_keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    keys = []
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        keys += flat_keys(value, path) if isinstance(value, dict) and value else [path]
    return keys


def test_the_site_builds_strict_with_every_page_in_the_navigation(site):
    pages = [p for p in site.root.rglob("index.html") if "assets" not in p.parts]
    assert len(pages) >= MIN_PAGES, f"{len(pages)} pages built, expected at least {MIN_PAGES}"
    assert "WARNING" not in site.log, site.log
    assert (site.root / "search" / "search_index.json").is_file(), "no search index: is the search plugin on?"
    # Markdown that reached the page as text (a line starting with `<word` opens a raw HTML block and
    # swallows the rest of its paragraph, links included): no page shows a link's source.
    leaked = {p.parent.relative_to(site.root).as_posix(): m.group(0) for p in pages
              if (m := re.search(r"\]\([\w./#-]+\.md", html.unescape(re.sub(r"<[^>]+>", " ", p.read_text()))))}
    assert not leaked, f"pages showing Markdown link source (unrendered Markdown): {leaked}"
    home = site.text(".")
    for title in ("Getting started", "Training", "Data", "Sweeps and studies", "SLURM", "Tracking",
                  "The shared server", "Models and serving", "Checkpoints and resume", "Reliability",
                  "Benchmarks", "Architecture", "Reference"):  # fmt: skip
        assert title in home, f"the navigation has no {title!r}"


def test_every_console_script_has_a_page_with_every_option(site):
    hook = load_hook()
    for script, target in console_scripts().items():
        text = site.text(f"reference/cli/{script}")
        assert script in text
        module = importlib.import_module(target.split(":")[0])
        parsers = hook.parsers_of(module)
        if not parsers:  # the Hydra app: its groups and Hydra's own flags
            from hydra._internal.utils import get_args_parser

            parsers = [get_args_parser()]
            for group in ("model", "data", "trainer", "optim", "aug", "tracking", "experiment"):
                assert f"{group}" in text, f"{script}'s page does not name the config group {group}"
        missing = [o for p in parsers for o in option_strings(p) if o not in text]
        assert not missing, f"{script}'s page lacks the options {missing}"


def test_every_config_group_has_a_page_with_every_key(site):
    conf = ROOT / "conf"
    groups = sorted({p.parent.relative_to(conf).as_posix() for p in conf.rglob("*.yaml")} - {"."})
    assert {"data", "trainer", "optim", "aug", "tracking", "experiment", "recipe"} <= set(groups)
    for group in ["train", "model", *groups]:
        text = site.text(f"reference/config/{group.replace('/', '-')}")
        files = [conf / "train.yaml"] if group == "train" else sorted((conf / group).glob("*.yaml"))
        for file in files:
            assert group == "train" or file.stem in text, f"the {group} page does not name its option {file.stem}"
            keys = flat_keys(yaml.safe_load(file.read_text()) or {})
            missing = [k for k in keys if k not in text]
            assert not missing, f"the {group} page lacks keys of {file.relative_to(ROOT)}: {missing}"
    assert "model.phi" in site.text("reference/config/model"), "the generated model group lacks model.phi"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= README_MAX_CHARS, f"README.md is {len(readme)} characters (at most {README_MAX_CHARS})"
    assert "make demo" in readme and "make test" in readme, "README.md lost a set-up command"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 8, f"README.md links only {len(links)} pages of the site"
    broken = [link for link in links if not (ROOT / link).is_file() and not generated(link)]
    assert not broken, f"README.md links to missing pages: {broken}"


def generated(link: str) -> bool:
    return link.startswith("docs/reference/") and link != "docs/reference/index.md"


# ------------------------------------------------------------------------------------ in a browser -----
@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on 127.0.0.1 (search needs http://, as under `mkdocs serve`)."""
    handler = functools.partial(Quiet, directory=str(site.root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


NAVIGATION = """(() => { const nav = document.querySelector('nav.md-nav--primary');
    return nav ? nav.querySelectorAll('a.md-nav__link[href]').length : 0; })()"""
SEARCH_BOX = "document.querySelector('input.md-search__input[name=query]') !== null"
# The results of the typed query; a keyup again while there are none, in case the query was typed before
# the search worker had loaded its index (Material then waits for the next keyup).
SEARCH_RESULTS = """(() => { const found = document.querySelectorAll('.md-search-result__item').length;
    if (!found) document.querySelector('input.md-search__input').dispatchEvent(new KeyboardEvent('keyup', {bubbles: true}));
    return found; })()"""


@pytest.mark.browser
def test_a_reader_finds_the_navigation_and_the_search_box(site, served, tmp_path):
    from support.chromium import Chromium

    with Chromium(tmp_path / "profile", width=1600, height=1000) as browser:
        for page, heading in (("", "phiscale"), ("reference/cli/phiscale-train/", "Hydra's flags")):
            browser.open(f"{served}/{page}")
            browser.wait_for_text(heading, timeout_s=60)
            links = browser.wait_for(NAVIGATION, f"the site navigation on /{page}", timeout_s=60)
            assert links >= MIN_PAGES, f"/{page}: the navigation has {links} links"
            browser.wait_for(SEARCH_BOX, f"the search box on /{page}", timeout_s=60)
            browser.screenshot(tmp_path / f"{page.strip('/').replace('/', '-') or 'index'}.png")
        browser.click("input.md-search__input", "the search box")
        for key in "resume":  # typed as keys: Material's search reads the box on keyup
            for kind in ("keyDown", "keyUp"):
                browser.call("Input.dispatchKeyEvent", type=kind, key=key, text=key if kind == "keyDown" else "")
        browser.wait_for(SEARCH_RESULTS, "search results for 'resume'", timeout_s=60)
        browser.screenshot(tmp_path / "search.png")
        print(f"\nscreenshots: {tmp_path}")
