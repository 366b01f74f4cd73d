"""Cost before running: a price per image for each resolution (and quality), and the rule for asking first.

HiAPI publishes its prices only on its pricing page, so every number here is
a default the user replaces: in Settings (kept in the database) or in the
environment / secrets (`STUDIO_PRICE_1K`, `STUDIO_PRICE_2K`, `STUDIO_PRICE_4K`
for the default route; `STUDIO_PRICE_1K_LOW` … `STUDIO_PRICE_4K_HIGH` for the
`ext` route's three qualities, each priced on its own;
`STUDIO_CURRENCY`, `STUDIO_CONFIRM_IMAGES`, `STUDIO_CONFIRM_COST`,
`STUDIO_MAX_ACTIVE_TASKS`). Money is `Decimal`, stored as integer micro-units,
so 3 × 0.1 is exactly 0.3. This module never imports streamlit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Protocol

from .ratios import RESOLUTIONS
from .validation import QUALITIES, Problem

#: What a designer calls each `ext` quality (low, medium, high), and what it is for.
QUALITY_NAMES: dict[str, str] = {"low": "Draft", "medium": "Standard", "high": "Final"}


def price_key(resolution: str, quality: str | None = None) -> str:
    """The price table's key: "2K" on the default route, "2K_high" for `ext` at a quality."""
    return f"{resolution}_{quality}" if quality else resolution


#: Every row of the price table: the default route's resolutions, then each quality's.
PRICE_KEYS: tuple[str, ...] = RESOLUTIONS + tuple(price_key(r, q) for q in QUALITIES for r in RESOLUTIONS)

# Placeholders, not HiAPI's prices: the Settings page says so until they are set.
DEFAULT_PRICES: dict[str, Decimal] = {
    "1K": Decimal("0.03"),
    "2K": Decimal("0.06"),
    "4K": Decimal("0.12"),
    **{price_key(r, "low"): Decimal(v) for r, v in zip(RESOLUTIONS, ("0.01", "0.02", "0.04"), strict=True)},
    **{
        price_key(r, "medium"): Decimal(v) for r, v in zip(RESOLUTIONS, ("0.04", "0.08", "0.16"), strict=True)
    },
    **{price_key(r, "high"): Decimal(v) for r, v in zip(RESOLUTIONS, ("0.13", "0.26", "0.52"), strict=True)},
}


def price_label(key: str) -> str:
    """'1K image' or '1K Final image': how Settings and messages name a price row."""
    res, _, quality = key.partition("_")
    return f"{res} {QUALITY_NAMES[quality]} image" if quality in QUALITY_NAMES else f"{res} image"


DEFAULT_CURRENCY = "USD"
DEFAULT_CONFIRM_IMAGES = 4  # ask before sending more images than this in one click…
DEFAULT_CONFIRM_COST = Decimal("1.00")  # …or spending more than this
DEFAULT_MAX_ACTIVE = 8  # tasks sent to HiAPI and not finished, at once
MAX_ACTIVE_LIMIT = 64
MAX_PRICE = Decimal("1000")
MICROS = Decimal(1_000_000)
SETTINGS_KEY = "pricing"
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥"}


def to_micros(amount: Decimal) -> int:
    return int((amount * MICROS).to_integral_value(ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    return Decimal(int(micros)) / MICROS


def parse_amount(value: object, field_name: str) -> tuple[Decimal | None, Problem | None]:
    """A non-negative amount from user text ("0.04", "$0.04", "0,04"); or a problem naming the field."""
    text = str(value if value is not None else "").strip()
    for sym in set(_SYMBOLS.values()):
        text = text.replace(sym, "")
    text = text.replace(" ", "").replace(",", ".") if text.count(",") == 1 and "." not in text else text
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        return None, Problem(field_name, f"{field_name} must be a number such as 0.04 (got {value!r}).")
    if not amount.is_finite() or amount < 0:
        return None, Problem(field_name, f"{field_name} must be zero or more (got {value!r}).")
    if amount > MAX_PRICE:
        return None, Problem(field_name, f"{field_name} must be at most {MAX_PRICE} (got {value!r}).")
    return amount, None


def format_money(amount: Decimal, currency: str) -> str:
    """`$0.36`, `€1,204.50`, `0.0450 CHF`: two decimals, four for sub-cent amounts."""
    places = Decimal("0.01") if amount == 0 or amount >= Decimal("0.01") else Decimal("0.0001")
    q = amount.quantize(places, ROUND_HALF_UP)
    if q == 0 and amount > 0:
        q = amount.quantize(Decimal("0.000001"), ROUND_HALF_UP).normalize()
    text = f"{q:,}"
    sym = _SYMBOLS.get(currency.upper())
    return f"{sym}{text}" if sym else f"{text} {currency}"


@dataclass(frozen=True)
class Pricing:
    """Prices per image by resolution (and `ext` quality), the confirmation rule and the concurrency limit."""

    prices: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    currency: str = DEFAULT_CURRENCY
    confirm_images: int = DEFAULT_CONFIRM_IMAGES
    confirm_cost: Decimal = DEFAULT_CONFIRM_COST
    max_active: int = DEFAULT_MAX_ACTIVE
    from_user: bool = False  # False while the prices are the built-in placeholders

    def unit(self, resolution: str, quality: str | None = None) -> Decimal:
        """One image's price; `quality` (low/medium/high) prices the `ext` route."""
        return self.prices.get(price_key(resolution, quality), Decimal(0))

    def estimate(self, images: int, resolution: str, quality: str | None = None) -> Decimal:
        """Estimated cost of `images` images at one resolution (and quality)."""
        return self.unit(resolution, quality) * max(0, int(images))

    def needs_confirmation(self, images: int, resolution: str, quality: str | None = None) -> bool:
        """Ask first when a click sends more than `confirm_images` images or costs more than `confirm_cost`."""
        return images > self.confirm_images or self.estimate(images, resolution, quality) > self.confirm_cost

    def money(self, amount: Decimal) -> str:
        return format_money(amount, self.currency)

    def to_json(self) -> str:
        return json.dumps(
            {
                "prices": {k: str(v) for k, v in self.prices.items()},
                "currency": self.currency,
                "confirm_images": self.confirm_images,
                "confirm_cost": str(self.confirm_cost),
                "max_active": self.max_active,
            }
        )


def build(values: Mapping[str, Any], base: Pricing | None = None) -> tuple[Pricing, list[Problem]]:
    """A Pricing from loose values (form fields, secrets, stored JSON); bad fields keep `base`'s value.

    Keys: `prices` (mapping `PRICE_KEYS` -> amount) or `price_1K`…`price_4K_high`, `currency`,
    `confirm_images`, `confirm_cost`, `max_active`.
    """
    base = base or Pricing()
    problems: list[Problem] = []
    prices = dict(base.prices)
    listed = values.get("prices")
    given: Mapping[str, Any] = listed if isinstance(listed, Mapping) else {}
    for key in PRICE_KEYS:
        raw = given.get(key, values.get(f"price_{key}"))
        if raw is None or str(raw).strip() == "":
            continue
        amount, problem = parse_amount(raw, f"Price per {price_label(key)}")
        if amount is not None:  # parse_amount gives exactly one of amount and problem
            prices[key] = amount
        elif problem:
            problems.append(problem)
    currency = str(values.get("currency") or base.currency).strip().upper()
    if not (1 <= len(currency) <= 5 and currency.isalpha()):
        problems.append(Problem("currency", f"Currency must be a code such as USD (got {currency!r})."))
        currency = base.currency
    confirm_images = base.confirm_images
    if values.get("confirm_images") not in (None, ""):
        try:
            confirm_images = int(str(values["confirm_images"]).strip())
            if confirm_images < 0:
                raise ValueError
        except ValueError:
            problems.append(
                Problem("confirm_images", "Ask above this many images must be a whole number, 0 or more.")
            )
            confirm_images = base.confirm_images
    confirm_cost = base.confirm_cost
    if values.get("confirm_cost") not in (None, ""):
        amount, problem = parse_amount(values["confirm_cost"], "Ask above this cost")
        if amount is not None:
            confirm_cost = amount
        elif problem:
            problems.append(problem)
    max_active = base.max_active
    if values.get("max_active") not in (None, ""):
        try:
            max_active = int(str(values["max_active"]).strip())
            if not 1 <= max_active <= MAX_ACTIVE_LIMIT:
                raise ValueError
        except ValueError:
            problems.append(
                Problem("max_active", f"Tasks at once must be a whole number from 1 to {MAX_ACTIVE_LIMIT}.")
            )
            max_active = base.max_active
    out = Pricing(prices, currency, confirm_images, confirm_cost, max_active, base.from_user)
    return out, problems


def defaults_from(env_values: Mapping[str, str | None]) -> tuple[Pricing, list[Problem]]:
    """The defaults: built-in placeholders overridden by environment / secrets values."""
    values = {
        **{f"price_{key}": env_values.get(f"STUDIO_PRICE_{key.upper()}") for key in PRICE_KEYS},
        "currency": env_values.get("STUDIO_CURRENCY"),
        "confirm_images": env_values.get("STUDIO_CONFIRM_IMAGES"),
        "confirm_cost": env_values.get("STUDIO_CONFIRM_COST"),
        "max_active": env_values.get("STUDIO_MAX_ACTIVE_TASKS"),
    }
    pricing, problems = build(values)
    given = any(values[f"price_{key}"] for key in PRICE_KEYS)
    return replace(pricing, from_user=given), problems


class SettingStore(Protocol):
    """Where prices are saved: `repositories.SettingsRepository` (not imported: the records import this module)."""

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def delete_setting(self, key: str) -> None: ...


def load(store: SettingStore, defaults: Pricing) -> Pricing:
    """What Settings saved (if anything) over the defaults."""
    raw = store.get_setting(SETTINGS_KEY)
    if not raw:
        return defaults
    try:
        values = json.loads(raw)
    except ValueError:
        return defaults
    pricing, _ = build(values if isinstance(values, dict) else {}, defaults)
    return replace(pricing, from_user=True)


def save(store: SettingStore, pricing: Pricing) -> None:
    store.set_setting(SETTINGS_KEY, pricing.to_json())


def reset(store: SettingStore) -> None:
    store.delete_setting(SETTINGS_KEY)
