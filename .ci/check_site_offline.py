"""Check that a built mkdocs site works offline: every script, stylesheet, image and font it loads is a file
of the site, and the pages with formulas load the MathJax shipped with it.

    python .ci/check_site_offline.py SITE_DIR [--math-page concepts/mi-loss/index.html]

Links a reader follows (``<a href="https://...">``) are fine; what the browser fetches by itself is not:
``<script src>``, ``<link href>`` (stylesheets, icons, preloads), ``<img>``/``<source>``/``<iframe>``
``src`` and ``url(...)``/``@import`` in the CSS. With ``--render`` and a Chromium on the PATH, the math page is
also opened headless with the network off and must show rendered formulas (``mjx-container``), not raw TeX.
"""

from __future__ import annotations

import argparse
import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

FETCHED = {"script": ("src",), "link": ("href",), "img": ("src",), "source": ("src",), "iframe": ("src",)}
# the <link rel=...> kinds that the browser fetches by itself
LOADED_LINKS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "manifest", "apple-touch-icon"}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")
MATHJAX = "assets/mathjax/tex-svg.js"


class _Fetches(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "link" and not LOADED_LINKS & set((dict(attrs).get("rel") or "").lower().split()):
            return  # rel="canonical", "alternate", ...: an address, not something the browser loads
        for name, value in attrs:
            if value and name in FETCHED.get(tag, ()):
                self.urls.append((tag, value))


def _is_remote(url: str) -> bool:
    return url.startswith("//") or urlsplit(url).scheme not in ("", "data", "blob", "about")


def check_site(site: Path) -> tuple[list[str], int]:
    """Problems found (remote or missing resources), and how many resources were checked."""
    problems = []
    checked = 0
    for page in sorted(site.rglob("*.html")):
        parser = _Fetches()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, url in parser.urls:
            checked += 1
            where = page.relative_to(site)
            if _is_remote(url):
                problems.append(f"{where}: <{tag}> loads {url} from the network")
                continue
            path = urlsplit(url).path
            # a root-relative path (404.html has them) is relative to the site's root
            local = site / path.lstrip("/") if path.startswith("/") else page.parent / path
            if path and not local.exists():
                problems.append(f"{where}: <{tag}> loads {url}, which is not in the site")
    for sheet in sorted(site.rglob("*.css")):
        for match in CSS_URL.finditer(sheet.read_text(encoding="utf-8", errors="replace")):
            url = match.group(1) or match.group(2)
            checked += 1
            if _is_remote(url):
                problems.append(f"{sheet.relative_to(site)}: loads {url} from the network")
    return problems, checked


def check_math_page(site: Path, page: str) -> list[str]:
    """The page has arithmatex formulas and loads the shipped MathJax, which is in the site."""
    path = site / page
    if not path.is_file():
        return [f"{page} is not in the site"]
    text = path.read_text(encoding="utf-8")
    problems = []
    if 'class="arithmatex"' not in text:
        problems.append(f"{page} has no arithmatex formula")
    if MATHJAX not in text:
        problems.append(f"{page} does not load {MATHJAX}")
    if not (site / MATHJAX).is_file():
        problems.append(f"{MATHJAX} is not in the site (run .ci/fetch_mathjax.sh before mkdocs build)")
    return problems


def render_math_page(site: Path, page: str) -> list[str]:
    """Open the page in headless Chromium with no network; rendered formulas become ``mjx-container``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium on the PATH: the render check is skipped")
        return []
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # any network fetch fails
            f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
            (site / page).resolve().as_uri(),
        ]  # fmt: skip
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    rendered = dom.count("<mjx-container")
    raw = len(re.findall(r'<span class="arithmatex">\\\(', dom))
    print(f"{page} in headless Chromium, offline: {rendered} rendered formulas, {raw} left as raw TeX")
    if rendered == 0 or raw:
        return [f"{page}: formulas did not render offline ({rendered} rendered, {raw} raw)"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the folder mkdocs built")
    parser.add_argument("--math-page", default="concepts/mi-loss/index.html", help="a page with formulas")
    parser.add_argument("--render", action="store_true", help="also render the math page in Chromium")
    args = parser.parse_args(argv)
    problems, checked = check_site(args.site)
    problems += check_math_page(args.site, args.math_page)
    if args.render and not problems:
        problems += render_math_page(args.site, args.math_page)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"site {args.site}: {checked} resources checked, all local; {args.math_page} loads {MATHJAX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
