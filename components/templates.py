"""Starter templates: one worked example per use case of GPT Image 2."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    key: str
    title: str
    use_case: str
    prompt: str
    ratios: tuple[str, ...]
    resolution: str


TEMPLATES: tuple[Template, ...] = (
    Template(
        "menu",
        "Café menu board",
        "Accurate text: menus, signs, UI, infographics",
        'A chalkboard café menu photographed straight on, hand-lettered in white chalk. Title "MORNING BREW" '
        'at the top. Three lines below, left aligned with prices right aligned: "Espresso 3.00", '
        '"Flat White 4.50", "Almond Croissant 3.80". Small doodles of coffee beans in the corners. '
        "Every word spelled exactly as written, crisp and legible.",
        ("3:4",),
        "2K",
    ),
    Template(
        "poster",
        "Event poster",
        "Poster and layout work",
        'A bold Swiss-style poster for a summer sale. Headline "SUMMER DROP" in huge condensed sans-serif '
        'letters across the top third, subline "Up to 40% off, 12-14 July" below it. Warm orange and '
        "deep blue colour blocks, generous margins, a grid layout with a single abstract sun shape. "
        "Print-ready, high contrast, no other text.",
        ("2:3", "16:9", "9:16"),
        "2K",
    ),
    Template(
        "product",
        "Product hero shot",
        "Product and commerce images",
        "Studio product photograph of a matte sage-green ceramic coffee mug on a pale stone plinth, "
        "soft diffused key light from the left, gentle shadow, seamless off-white background, "
        "shallow depth of field, e-commerce hero image, no text, no logo.",
        ("1:1", "4:5"),
        "2K",
    ),
    Template(
        "draft",
        "Long creative draft",
        "Long-prompt creative drafts",
        "Cinematic wide illustration for a fantasy novel's opening chapter. A floating market town built on "
        "the backs of three slow-moving whale-sized turtles crossing a misty sea at dawn. Rope bridges "
        "link the shells; lanterns still glow in paper windows; merchants unroll awnings in saffron, teal "
        "and rust. In the foreground a girl in a patched oilskin coat leans from a crow's nest holding a "
        "brass spyglass, her scarf whipping in the wind. Gulls circle; a distant lighthouse catches the "
        "first light. Painterly, detailed, volumetric morning fog, warm rim light, muted palette with a few "
        "saturated accents, composition leading the eye from the girl to the lighthouse along the bridges. "
        'A small hand-painted shop sign in the middle ground reads "TIDE & TEA".',
        ("21:9",),
        "2K",
    ),
    Template(
        "launch",
        "Launch in every format",
        "Multi-format delivery of one creative",
        'Launch visual for wireless headphones called "AURORA": the headphones float above a dark gradient '
        'with soft aurora-green light trails. Headline "HEAR THE LIGHT" in clean white sans-serif, '
        "product centred, generous safe area around the text for cropping to every placement.",
        ("9:16", "4:5", "16:9", "21:9"),
        "2K",
    ),
)

BY_KEY = {t.key: t for t in TEMPLATES}
