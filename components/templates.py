"""Starter templates: one worked example per use case of GPT Image 2.

They live in the prompt library (`studio.library.STARTERS`, seeded into the
database once); this view keeps the shape the Studio's template row uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.library import STARTERS


@dataclass(frozen=True)
class Template:
    key: str
    title: str
    use_case: str
    prompt: str
    ratios: tuple[str, ...]
    resolution: str


TEMPLATES: tuple[Template, ...] = tuple(
    Template(s.key, s.template.name, s.use_case, s.template.prompt, s.template.ratios, s.template.resolution)
    for s in STARTERS
)

BY_KEY = {t.key: t for t in TEMPLATES}
