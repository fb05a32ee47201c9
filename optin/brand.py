"""The operator's brand: name, logo, colours, and the stylesheet made from them.

Pages get the colours from ``/brand.css`` (the Content-Security-Policy allows
no inline style), mails inline them. Every colour text is written in is
derived here from the brand colour so that it reaches WCAG AA (4.5:1) on the
background it sits on, whatever accent an operator picks: a light brand
colour such as ``#f59e0b`` stays the colour of buttons and borders, while
links and secondary buttons use a darkened shade of it (a lightened one in
dark mode). Mail buttons always have white text, on the brand colour darkened
as far as that needs, since mail clients that invert colours would turn dark
button text light on a light button. Colour pairs the operator set below AA are still reported at
start-up. Hand-written: the WCAG formulas are a few lines, and no colour
library is a dependency.
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


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(max(0.0, min(255.0, c))):02x}" for c in rgb)


def mix(a: str, b: str, share_of_a: float) -> str:
    """``share_of_a`` of ``a`` and the rest of ``b``, in sRGB (as CSS ``color-mix`` does)."""
    ra, rb = _rgb(a), _rgb(b)
    return _hex(tuple(x * share_of_a + y * (1 - share_of_a) for x, y in zip(ra, rb, strict=True)))  # type: ignore[arg-type]


def readable_shade(color: str, backgrounds: tuple[str, ...], minimum: float = AA_TEXT) -> str:
    """``color``, or the closest shade of it (towards black on light backgrounds, towards
    white on dark ones) that reaches ``minimum`` contrast on every one of ``backgrounds``."""
    if all(contrast_ratio(color, bg) >= minimum for bg in backgrounds):
        return color.lower()
    target = DARK_END if _luminance(backgrounds[0]) > 0.18 else LIGHT
    for step in range(1, 21):
        shade = mix(target, color, step / 20)
        if all(contrast_ratio(shade, bg) >= minimum for bg in backgrounds):
            return shade
    return target


DARK_END = "#000000"
#: Dark mode (prefers-color-scheme: dark): the card, the page around it, the text.
DARK_CARD = "#1f2937"
DARK_PAGE = "#111827"
DARK_TEXT = "#f3f4f6"


def palette(primary: str, text: str, background: str) -> dict[str, str]:
    """Every colour a page or mail uses, derived so text reaches 4.5:1 where it sits."""
    page = mix(primary, background, 0.05)
    tint = mix(primary, background, 0.10)
    on_button = readable_on(primary)
    button = primary if contrast_ratio(on_button, primary) >= AA_TEXT else \
        readable_shade(primary, (LIGHT,))
    if button != primary:
        on_button = LIGHT
    link = readable_shade(primary, (background, page, tint))
    return {
        "page": page, "tint": tint, "border": mix(text, background, 0.20),
        "link": link, "link_hover": readable_shade(mix(DARK_END, link, 0.2),
                                                   (background, page, tint)),
        "muted": readable_shade(mix(text, background, 0.82), (background, page)),
        "button": button, "on_button": on_button,
        "button_hover": mix(DARK_END, button, 0.18) if on_button == LIGHT else mix(LIGHT, button, 0.18),
    }


def dark_palette(primary: str) -> dict[str, str]:
    """The same roles for dark mode: lightened shades of the brand colour on dark grey."""
    page = mix(primary, DARK_PAGE, 0.06)
    tint = mix(primary, DARK_CARD, 0.16)
    on_button = readable_on(primary)
    button = primary if contrast_ratio(on_button, primary) >= AA_TEXT else \
        readable_shade(primary, (LIGHT,))
    if button != primary:
        on_button = LIGHT
    link = readable_shade(primary, (DARK_CARD, page, tint))
    return {
        "bg": DARK_CARD, "text": DARK_TEXT, "page": page, "tint": tint,
        "border": mix(DARK_TEXT, DARK_CARD, 0.25), "link": link,
        "link_hover": readable_shade(mix(LIGHT, link, 0.25), (DARK_CARD, page, tint)),
        "muted": readable_shade(mix(DARK_TEXT, DARK_CARD, 0.8), (DARK_CARD, page)),
        "button": button, "on_button": on_button,
        "button_hover": mix(DARK_END, button, 0.18) if on_button == LIGHT else mix(LIGHT, button, 0.18),
    }


def brand_from(*, name: str, logo_url: str | None, primary_color: str, text_color: str,
               background_color: str) -> dict[str, str | None]:
    """The brand as templates see it (a plain dict, so operators' templates can ``.get``)."""
    colours = palette(primary_color.lower(), text_color.lower(), background_color.lower())
    return {
        "name": name,
        "logo_url": logo_url,
        "primary_color": primary_color.lower(),
        "text_color": text_color.lower(),
        "background_color": background_color.lower(),
        "on_primary_color": colours["on_button"],
        **{f"{role}_color": value for role, value in colours.items()},
        **{f"dark_{role}_color": value
           for role, value in dark_palette(primary_color.lower()).items()},
        # Mail buttons always carry white text, on the brand colour darkened until it
        # reads (4.5:1): clients that invert a mail turn dark text light but leave a
        # coloured button as it is, so near-black on a light brand colour (amber) became
        # white on amber, 2.1:1 (measured in Chromium's forced dark mode).
        "mail_button_color": readable_shade(primary_color.lower(), (LIGHT,)),
        "mail_on_button_color": LIGHT,
    }


def problems(brand: dict[str, str | None]) -> list[str]:
    """Why the brand may be hard to read or blocked; logged as warnings at start-up."""
    found = []
    bg = str(brand["background_color"])
    for key, variable in (("text_color", "OPTIN_BRAND_TEXT_COLOR"),):
        ratio = contrast_ratio(str(brand[key]), bg)
        if ratio < AA_TEXT:
            found.append(f"{variable} {brand[key]} on OPTIN_BRAND_BACKGROUND_COLOR {bg} has "
                         f"contrast {ratio:.1f}:1, below the {AA_TEXT}:1 that WCAG AA asks of text")
    logo = brand.get("logo_url")
    if logo and urlsplit(logo).scheme not in {"https", ""}:
        found.append("OPTIN_BRAND_LOGO_URL is not https://; the pages' Content-Security-Policy "
                     "will block it")
    return found


ROLES = ("page", "tint", "border", "link", "link_hover", "muted", "button", "on_button",
         "button_hover")


def stylesheet(brand: dict[str, str | None]) -> str:
    """``/brand.css``: the custom properties ``optin.css`` uses, light and dark."""
    def block(prefix: str) -> str:
        lines = [f"  --optin-{role.replace('_', '-')}: {brand[prefix + role + '_color']};"
                 for role in ROLES]
        return "\n".join(lines)
    return (
        "/* Generated from the OPTIN_BRAND_* settings. */\n"
        ":root {\n"
        f"  --optin-primary: {brand['primary_color']};\n"
        f"  --optin-on-primary: {brand['on_primary_color']};\n"
        f"  --optin-text: {brand['text_color']};\n"
        f"  --optin-bg: {brand['background_color']};\n"
        f"{block('')}\n"
        "}\n"
        "@media (prefers-color-scheme: dark) {\n"
        "  :root {\n"
        f"  --optin-text: {brand['dark_text_color']};\n"
        f"  --optin-bg: {brand['dark_bg_color']};\n"
        f"{block('dark_')}\n"
        "  }\n"
        "}\n"
    )
