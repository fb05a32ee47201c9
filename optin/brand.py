"""The operator's brand: name, logo, colours, and the stylesheet made from them.

Pages get the colours from ``/brand.css`` (the Content-Security-Policy allows
no inline style), mails inline them. The text colour on buttons is chosen
here so it stays readable whatever accent colour an operator picks, and
colour pairs below WCAG AA contrast are reported at start-up.
"""

from __future__ import annotations

from urllib.parse import urlsplit

AA_TEXT = 4.5  # WCAG 2.x AA for normal text
DARK = "#111827"
LIGHT = "#ffffff"


def _rgb(hex_color: str) -> tuple[int, int, int]:
    digits = hex_color.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _luminance(hex_color: str) -> float:
    """Relative luminance as WCAG 2.x defines it."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in _rgb(hex_color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG contrast ratio of two hex colours, from 1.0 to 21.0."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_on(background: str) -> str:
    """White or near-black, whichever reads better on ``background``."""
    return max((LIGHT, DARK), key=lambda fg: contrast_ratio(fg, background))


def brand_from(*, name: str, logo_url: str | None, primary_color: str, text_color: str,
               background_color: str) -> dict[str, str | None]:
    """The brand as templates see it (a plain dict, so operators' templates can ``.get``)."""
    return {
        "name": name,
        "logo_url": logo_url,
        "primary_color": primary_color.lower(),
        "text_color": text_color.lower(),
        "background_color": background_color.lower(),
        "on_primary_color": readable_on(primary_color),
    }


def problems(brand: dict[str, str | None]) -> list[str]:
    """Why the brand may be hard to read or blocked; logged as warnings at start-up."""
    found = []
    bg = str(brand["background_color"])
    for key, variable in (("primary_color", "OPTIN_BRAND_COLOR"),
                          ("text_color", "OPTIN_BRAND_TEXT_COLOR")):
        ratio = contrast_ratio(str(brand[key]), bg)
        if ratio < AA_TEXT:
            found.append(f"{variable} {brand[key]} on OPTIN_BRAND_BACKGROUND_COLOR {bg} has "
                         f"contrast {ratio:.1f}:1, below the {AA_TEXT}:1 that WCAG AA asks of text")
    logo = brand.get("logo_url")
    if logo and urlsplit(logo).scheme not in {"https", ""}:
        found.append("OPTIN_BRAND_LOGO_URL is not https://; the pages' Content-Security-Policy "
                     "will block it")
    return found


def stylesheet(brand: dict[str, str | None]) -> str:
    """``/brand.css``: the four custom properties ``optin.css`` derives everything from."""
    return (
        "/* Generated from the OPTIN_BRAND_* settings. */\n"
        ":root {\n"
        f"  --optin-primary: {brand['primary_color']};\n"
        f"  --optin-on-primary: {brand['on_primary_color']};\n"
        f"  --optin-text: {brand['text_color']};\n"
        f"  --optin-bg: {brand['background_color']};\n"
        "}\n"
    )
