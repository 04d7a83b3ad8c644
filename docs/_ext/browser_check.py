"""Open pages of the built site in headless Chromium: no console error, no failed request.

Not part of the build or the test suite (it needs a browser): a manual check, see
"Building the docs" in CONTRIBUTING.md. Needs Debian's ``chromium`` and the ``playwright``
package, which drives that Chromium (it downloads no browser of its own here)::

    python -m http.server -d docs/_build/html 8765 &
    python docs/_ext/browser_check.py http://127.0.0.1:8765/ index.html tutorial.html

``SHOTS=DIR`` keeps a screenshot of each page in DIR.
"""

from __future__ import annotations

import os
import sys

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def check_page(browser: Browser, url: str) -> int:
    """Print what loading ``url`` logged; return the number of problems found."""
    page = browser.new_page()
    messages: list[tuple[str, str]] = []
    failed: list[str] = []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
    page.on("requestfailed", lambda r: failed.append(r.url))
    response = page.goto(url, wait_until="networkidle")
    status = response.status if response else 0
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.src.split('/').pop(), e.naturalWidth])"
    )
    errors = [m for m in messages if m[0] in ("error", "pageerror")]
    broken = [name for name, width in images if width == 0]
    print(f"{url}: HTTP {status}, title {page.title()!r}, {len(images)} images")
    for problem in [*errors, *(f"failed request {u}" for u in failed), *broken]:
        print(f"  {problem}")
    if os.environ.get("SHOTS"):
        name = url.rstrip("/").split("/", 3)[-1].replace("/", "_") or "index"
        page.screenshot(path=os.path.join(os.environ["SHOTS"], f"{name}.png"))
    page.close()
    return len(errors) + len(failed) + len(broken) + (status != 200)


def main() -> int:
    base, pages = sys.argv[1], sys.argv[2:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        problems = sum(check_page(browser, base + path) for path in pages)
        browser.close()
    print(f"{problems} problems" if problems else "OK: no console errors, no failed requests")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
