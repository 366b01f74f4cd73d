"""The prompt library: named templates (prompt with variables, ratios, resolution, sample rows).

Contract:
- Names are unique ignoring case; saving under a taken name raises
  `LibraryError` unless `overwrite=True`.
- The five starter templates are seeded once per database; a starter the user
  deletes stays deleted until "restore starters" brings back the missing ones.
- JSON export/import round-trips every field. Import checks the whole file
  first and refuses it with a message naming the entry and field; on a name
  clash it skips, replaces or renames (" (2)") as asked.
Templates are kept by a `TemplateBook` (`studio/repositories.py`); nothing
here writes SQL. This module never imports streamlit.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .campaigns import MAX_ROWS, clean_rows, template_problems, variables
from .ratios import RATIO_NAMES, RESOLUTIONS
from .records import Template  # re-exported: the library's record
from .repositories import NameTaken, TemplateBook
from .validation import MAX_PROMPT_CHARS

FORMAT = "hiapi-studio/prompt-library"
FORMAT_VERSION = 1
MAX_IMPORT_BYTES = 2 * 1024 * 1024
MAX_TEMPLATES = 1_000
MAX_NAME = 120
SEEDED_KEY = "library_starters_seeded"
CONFLICT_MODES = ("rename", "skip", "replace")


class LibraryError(ValueError):
    """A template or a library file that cannot be saved, with what to do."""


@dataclass(frozen=True)
class Starter:
    key: str
    template: Template
    use_case: str = field(default="")


def _starter(key: str, name: str, use_case: str, prompt: str, ratios: tuple[str, ...], res: str) -> Starter:
    return Starter(key, Template(name, prompt, ratios, res, note=use_case, starter=key), use_case)


STARTERS: tuple[Starter, ...] = (
    _starter(
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
    _starter(
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
    _starter(
        "product",
        "Product hero shot",
        "Product and commerce images",
        "Studio product photograph of a matte sage-green ceramic coffee mug on a pale stone plinth, "
        "soft diffused key light from the left, gentle shadow, seamless off-white background, "
        "shallow depth of field, e-commerce hero image, no text, no logo.",
        ("1:1", "3:4"),  # HiAPI offers no 4:5 at 2K; 3:4 crops to a 4:5 feed post
        "2K",
    ),
    _starter(
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
    _starter(
        "launch",
        "Launch in every format",
        "Multi-format delivery of one creative",
        'Launch visual for wireless headphones called "AURORA": the headphones float above a dark gradient '
        'with soft aurora-green light trails. Headline "HEAR THE LIGHT" in clean white sans-serif, '
        "product centred, generous safe area around the text for cropping to every placement.",
        ("9:16", "3:4", "16:9", "21:9"),  # 3:4, not 4:5: HiAPI offers no 4:5 at 2K
        "2K",
    ),
)


def check(t: Template, where: str = "") -> Template:
    """Validate and normalise a template; raises LibraryError naming the field."""
    at = f"{where}: " if where else ""
    name = " ".join(str(t.name or "").split())
    if not name:
        raise LibraryError(f"{at}name is required: give the template a name.")
    if len(name) > MAX_NAME:
        raise LibraryError(f"{at}name is {len(name)} characters; keep it under {MAX_NAME}.")
    if not isinstance(t.prompt, str) or not t.prompt.strip():
        raise LibraryError(f"{at}prompt is required: a template needs the text of a prompt.")
    if len(t.prompt) > MAX_PROMPT_CHARS:
        raise LibraryError(f"{at}prompt is {len(t.prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
    if "\x00" in t.prompt:
        raise LibraryError(f"{at}prompt contains a NUL character; remove it.")
    bad = template_problems(t.prompt)
    if bad:
        raise LibraryError(f"{at}prompt: {bad[0].message}")
    ratios = tuple(t.ratios or ())
    unknown = [r for r in ratios if r not in RATIO_NAMES]
    if unknown or not ratios:
        raise LibraryError(
            f"{at}ratios {list(unknown or ratios)!r} are not valid; use some of "
            + ", ".join(RATIO_NAMES)
            + "."
        )
    if t.resolution not in RESOLUTIONS:
        raise LibraryError(f"{at}resolution {t.resolution!r} is not supported; choose 1K, 2K or 4K.")
    if not isinstance(t.rows, Sequence) or any(not isinstance(r, Mapping) for r in t.rows):
        raise LibraryError(f"{at}rows must be a list of objects mapping each variable to a value.")
    if len(t.rows) > MAX_ROWS:
        raise LibraryError(f"{at}has {len(t.rows):,} sample rows; the limit is {MAX_ROWS:,}.")
    names = variables(t.prompt)
    rows = tuple(clean_rows(t.rows, names)) if names else ()
    return Template(
        name,
        t.prompt,
        tuple(dict.fromkeys(ratios)),
        t.resolution,
        str(t.note or "").strip(),
        rows,
        t.id,
        t.starter,
        t.updated_at,
    )


def export_json(templates: Sequence[Template]) -> str:
    """A library file: `{"format", "version", "templates": [...]}`."""
    return json.dumps(
        {"format": FORMAT, "version": FORMAT_VERSION, "templates": [t.to_json() for t in templates]},
        indent=2,
        ensure_ascii=False,
    )


def parse_json(data: bytes | str) -> list[Template]:
    """Every template of a library file, checked; raises LibraryError naming the entry and field."""
    if isinstance(data, bytes):
        if len(data) > MAX_IMPORT_BYTES:
            raise LibraryError(f"The file is {len(data) / 1e6:.1f} MB; a library file may be at most 2 MB.")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LibraryError(
                "The file is not UTF-8 JSON: export it from the studio's Library page."
            ) from None
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise LibraryError(f"The file is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    entries = doc.get("templates") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and doc.get("format") not in (None, FORMAT):
        raise LibraryError(f"This is not a prompt library file (format {doc.get('format')!r}).")
    if not isinstance(entries, list):
        raise LibraryError(
            'The file must hold a "templates" list: export it from the studio\'s Library page.'
        )
    if len(entries) > MAX_TEMPLATES:
        raise LibraryError(f"The file holds {len(entries):,} templates; import at most {MAX_TEMPLATES:,}.")
    out = []
    for i, e in enumerate(entries, 1):
        where = f"Template {i}"
        if not isinstance(e, dict):
            raise LibraryError(f"{where} must be an object with name, prompt, ratios and resolution.")
        if isinstance(e.get("name"), str) and e["name"].strip():
            where += f" ({e['name'].strip()[:40]})"
        ratios = e.get("ratios", ["1:1"])
        if isinstance(ratios, str):
            ratios = [ratios]
        if not isinstance(ratios, list) or any(not isinstance(r, str) for r in ratios):
            raise LibraryError(f'{where}: ratios must be a list such as ["1:1", "16:9"].')
        rows = e.get("rows", [])
        if not isinstance(rows, list):
            raise LibraryError(f"{where}: rows must be a list of objects.")
        t = Template(
            name=name if isinstance(name := e.get("name"), str) else "",
            prompt=e.get("prompt"),  # type: ignore[arg-type]
            ratios=tuple(ratios),
            resolution=e.get("resolution", "1K"),
            note=e.get("note", "") if isinstance(e.get("note", ""), str) else "",
            rows=tuple(rows),
        )
        out.append(check(t, where))
    return out


class Library:
    """The library in the studio database (a `TemplateRepository` plus settings)."""

    def __init__(self, store: TemplateBook) -> None:
        self.store = store

    def seed_starters(self) -> int:
        """Add the starter templates once per database; returns how many were added."""
        if self.store.get_setting(SEEDED_KEY):
            return 0
        n = self.restore_starters()
        self.store.set_setting(SEEDED_KEY, "1")
        return n

    def restore_starters(self) -> int:
        """Add back every starter that is missing (by key); a name taken by the user gets a suffix."""
        n = 0
        for s in STARTERS:
            if self.store.has_starter(s.key):
                continue
            self.save(s.template, on_conflict="rename")
            n += 1
        return n

    def list(self, query: str = "", *, limit: int = 500) -> builtins.list[Template]:
        """Templates whose name, prompt or note contain every word of `query`; starters first, then by name."""
        return self.store.templates(query, limit=limit)

    def get(self, template_id: int) -> Template | None:
        return self.store.template(template_id)

    def by_name(self, name: str) -> Template | None:
        return self.store.template_by_name(" ".join(name.split()))

    def starters(self) -> builtins.list[Template]:  # `list` here is the method above
        by_key = {t.starter: t for t in self.store.starter_templates()}
        return [by_key[s.key] for s in STARTERS if s.key in by_key]

    def save(self, t: Template, *, overwrite: bool = False, on_conflict: str | None = None) -> Template:
        """Insert `t`, or update it when it has an id. Returns the stored template.

        A name taken by another template raises LibraryError, unless
        `overwrite` (replace that one) or `on_conflict` ("rename", "skip", "replace").
        """
        t = check(t)
        mode = on_conflict or ("replace" if overwrite else None)
        try:
            return self.store.save_template(t, on_conflict=mode)
        except NameTaken:
            raise LibraryError(
                f"A template named {t.name!r} already exists: choose another name, or overwrite it."
            ) from None

    def delete(self, template_id: int) -> bool:
        return self.store.delete_template(template_id)

    def export(self, ids: Sequence[int] | None = None) -> str:
        items = self.list()
        if ids is not None:
            wanted = set(ids)
            items = [t for t in items if t.id in wanted]
        return export_json(items)

    def import_json(self, data: bytes | str, *, on_conflict: str = "rename") -> dict[str, int]:
        """Import a library file (all or nothing). Returns counts: added, replaced, renamed, skipped."""
        if on_conflict not in CONFLICT_MODES:
            raise ValueError(f"on_conflict must be one of {CONFLICT_MODES}")
        templates = parse_json(data)
        counts = {"added": 0, "replaced": 0, "renamed": 0, "skipped": 0}
        for t in templates:
            existing = self.by_name(t.name)
            self.save(t, on_conflict=on_conflict)
            if existing is None:
                counts["added"] += 1
            elif on_conflict == "skip":
                counts["skipped"] += 1
            elif on_conflict == "replace":
                counts["replaced"] += 1
            else:
                counts["renamed"] += 1
        return counts
