"""The HTML mails in mail clients that darken them themselves (issue 18, point 13).

Clients such as Gmail's and Outlook's apps invert a mail's colours instead of (or
besides) honouring ``prefers-color-scheme``. Chromium's own forced dark mode
(``WebContentsForceDark``) does the same at paint time, so it stands in for them,
twice: the mail as sent (``--force-dark-mode`` too, so its dark styles apply and
Chromium may darken the rest), and the mail with its ``<style>`` removed, as a
client that strips it and inverts only the inline colours.

axe cannot judge this: the darkening happens when painting, and the computed styles
axe reads keep the light colours. So the contrast is measured on the pixels: each
text element's screenshot, its most common colour as the background, and the colour
farthest from it (among those covering a real share of the element) as the text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from optin.brand import contrast_ratio

from ..conftest import deliver
from .test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PHONE,
    SCREENSHOTS,
    Live,
    pytestmark,  # noqa: F401  (skipped without Chromium, like test_browser)
    serve,
)
from .test_pages import FOOTER, _set_list, _signup

FORCE_DARK = ["--enable-features=WebContentsForceDark"]
#: WCAG AA for body text; the measured pixels of anti-aliased text never quite reach
#: the colour they were painted with, so this is the stricter side of the check.
AA = 4.5
TEXT_ELEMENTS = "h1, p, td.body > p, blockquote, a"


@pytest.fixture(scope="module")
def dark_chromium() -> Iterator[Any]:
    """Chromium with forced dark mode, both ways: {"as_sent": …, "stripped": …}."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = {
            "as_sent": playwright.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--force-dark-mode", *FORCE_DARK]),
            "stripped": playwright.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *FORCE_DARK]),
        }
        yield browsers
        for chromium in browsers.values():
            chromium.close()


def _hex(rgb: tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def measured_contrast(png: bytes) -> float | None:
    """The contrast of an element's text against its background, from its pixels."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    counts = image.getcolors(maxcolors=image.width * image.height) or []
    if not counts:
        return None
    total = sum(n for n, _ in counts)
    background = max(counts)[1]
    # The text: the colour farthest from the background among those painted over at
    # least 1% of the box (the glyphs' stems), not a stray anti-aliasing pixel.
    painted = [colour for n, colour in counts if n >= total * 0.01 and colour != background]
    if not painted:
        return None
    return max(contrast_ratio(_hex(c), _hex(background)) for c in painted)


def _strip_styles(html: str) -> str:
    """The mail as a client that drops ``<style>`` and the colour-scheme hints shows it."""
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return re.sub(r'<meta name="(color-scheme|supported-color-schemes)"[^>]*>', "", html)


def _check(browser: Any, html: str, name: str) -> list[str]:
    page = browser.new_page(viewport=PHONE)
    page.set_content(html)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    poor = []
    elements = page.locator(TEXT_ELEMENTS)
    for i in range(elements.count()):
        element = elements.nth(i)
        text = element.inner_text().strip()
        if not text or not element.is_visible():
            continue
        ratio = measured_contrast(element.screenshot())
        if ratio is not None and ratio < AA:
            poor.append(f"{name}: {text[:40]!r} {ratio:.2f}:1")
    page.close()
    return poor


def _mails(live: Live, locale: str) -> dict[str, Any]:
    """The confirmation, welcome and goodbye mail of one subscriber."""
    address = f"dark.{locale}@example.org"
    _signup(live, address, locale, first_name="Anna")
    with live.app.test_client() as client:
        confirm = live.link(address, "confirm").removeprefix(live.base_url)
        assert client.post(confirm).status_code == 303
        deliver(live.app)
        unsubscribe = live.link(address, "unsubscribe").removeprefix(live.base_url)
        assert client.post(unsubscribe).status_code == 303
    deliver(live.app)
    mails = live.mailbox.to(address)
    assert len(mails) == 3
    return dict(zip(("confirm", "welcome", "goodbye"), mails, strict=True))


@pytest.mark.parametrize("colour", [None, "#f59e0b"])
def test_mails_stay_readable_when_the_client_darkens_them(dark_chromium, app_config, mailbox,
                                                          colour):
    if colour:
        app_config["OPTIN_BRAND_COLOR"] = colour
    app_config["OPTIN_BRAND_NAME"] = "Example"
    with serve(app_config, mailbox) as live:
        _set_list(live, send_goodbye=True, **FOOTER)
        poor: list[str] = []
        for locale in ("de", "en"):
            for kind, message in _mails(live, locale).items():
                html = message.get_body(("html",)).get_content()
                suffix = "-amber" if colour else ""
                poor += _check(dark_chromium["as_sent"], html,
                               f"{locale}-mail-{kind}{suffix}-phone-forced-dark")
                poor += _check(dark_chromium["stripped"], _strip_styles(html),
                               f"{locale}-mail-{kind}{suffix}-phone-forced-dark-stripped")
        assert poor == [], poor


def test_the_pixel_measure_tells_readable_from_unreadable(dark_chromium):
    """The measure itself: grey on grey fails, black on white passes (so a pass means it)."""
    page = dark_chromium["stripped"].new_page(viewport=PHONE)
    page.set_content('<meta name="color-scheme" content="light dark"><style>:root{color-scheme:'
                     'dark}</style><p id="bad" style="color:#777;background:#666;font-size:20px">'
                     'Kaum lesbar</p><p id="good" style="color:#000;background:#fff;font-size:'
                     '20px">Gut lesbar</p>')
    bad = measured_contrast(page.locator("#bad").screenshot())
    good = measured_contrast(page.locator("#good").screenshot())
    page.close()
    assert bad is not None and bad < 3  # (about 1.3:1 as written; the darkening moves it)
    assert good is not None and good > 10
