"""Regenerate the README's dashboard screenshots (docs/screenshots/*.png) from a running instance.

    .venv/bin/python scripts/screenshots.py                       # starts scripts/demo.py itself
    .venv/bin/python scripts/screenshots.py --url http://127.0.0.1:8000 \
        --username admin --password "$BILLBRIDGE_ADMIN_PASSWORD"
    .venv/bin/python scripts/screenshots.py --full-page --out /tmp/shots   # for reviewing

Drives Debian's Chromium (/usr/bin/chromium) with Playwright, at a laptop size and a
phone size. Never runs `playwright install`: see DEVELOPERS.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@dataclass(frozen=True)
class Shot:
    name: str  # file name without .png
    path: str  # a URL path, or "" for a step that navigates itself
    phone: bool = False  # also a phone-size shot (name-phone.png)


SHOTS = (
    Shot("overview", "/", phone=True),
    Shot("events", "/events", phone=True),
    Shot("event", ""),  # the newest failed event (else the newest event)
    Shot("workflows", "/workflows", phone=True),
    Shot("workflow-templates", "/workflows/new"),
    Shot("workflow-editor", "/workflows/payment-failed", phone=True),
    Shot("try-it", ""),  # "Try it" of payment-failed after the dry run
    Shot("connections", "/settings/connections"),
    Shot("alerts", "/settings/alerts"),
    Shot("tokens", "/settings/tokens"),
)


def launch(playwright_browser_type: object) -> Browser:
    """Chromium from Debian, headless."""
    browser: Browser = playwright_browser_type.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM, args=CHROMIUM_ARGS
    )
    return browser


def log_in(page: Page, url: str, username: str, password: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


def _open(page: Page, url: str, shot: Shot) -> None:
    if shot.name == "event":
        page.goto(url + "/events?status=failed")
        links = page.locator("[data-testid=events-table] a[href^='/events/']")
        if links.count() == 0:
            page.goto(url + "/events")
        page.locator("[data-testid=events-table] a[href^='/events/']").first.click()
        page.wait_for_load_state()
    elif shot.name == "try-it":
        page.goto(url + "/workflows/payment-failed/try")
        page.get_by_test_id("dry-run").click()
        page.get_by_test_id("preview").wait_for()
    else:
        page.goto(url + shot.path)


def take(
    browser: Browser, url: str, username: str, password: str, out: Path, *, full_page: bool
) -> list[Path]:
    """Every shot at laptop size, and the phone ones at phone size; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for size, suffix in ((LAPTOP, ""), (PHONE, "-phone")):
        context = browser.new_context(viewport=size, device_scale_factor=1)  # type: ignore[arg-type]
        page = context.new_page()
        log_in(page, url, username, password)
        for shot in SHOTS:
            if suffix and not shot.phone:
                continue
            _open(page, url, shot)
            target = out / f"{shot.name}{suffix}.png"
            page.screenshot(path=str(target), full_page=full_page)
            written.append(target)
        context.close()
    return written


@contextmanager
def _instance(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    if args.url:
        yield args.url.rstrip("/"), args.username, args.password
        return
    from scripts.demo import run_demo  # noqa: PLC0415 - only without --url

    with run_demo() as demo:
        yield demo.url, demo.username, demo.password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running instance (default: start scripts/demo.py)")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--full-page", action="store_true", help="whole pages, not the viewport")
    args = parser.parse_args()
    with _instance(args) as (url, username, password), sync_playwright() as playwright:
        browser = launch(playwright.chromium)
        try:
            for path in take(browser, url, username, password, args.out, full_page=args.full_page):
                print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
