"""Cost before running: a price per image for each resolution, and the rule for asking first.

HiAPI publishes its prices only on its pricing page, so every number here is
a default the user replaces: in Settings (kept in the database) or in the
environment / secrets (`STUDIO_PRICE_1K`, `STUDIO_PRICE_2K`, `STUDIO_PRICE_4K`,
`STUDIO_CURRENCY`, `STUDIO_CONFIRM_IMAGES`, `STUDIO_CONFIRM_COST`,
`STUDIO_MAX_ACTIVE_TASKS`). Money is `Decimal`, stored as integer micro-units,
so 3 × 0.1 is exactly 0.3. This module never imports streamlit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .ratios import RESOLUTIONS
from .validation import Problem

# Placeholders, not HiAPI's prices: the Settings page says so until they are set.
DEFAULT_PRICES: dict[str, Decimal] = {"1K": Decimal("0.03"), "2K": Decimal("0.06"), "4K": Decimal("0.12")}
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
    """Prices per image by resolution, the confirmation rule and the concurrency limit."""

    prices: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    currency: str = DEFAULT_CURRENCY
    confirm_images: int = DEFAULT_CONFIRM_IMAGES
    confirm_cost: Decimal = DEFAULT_CONFIRM_COST
    max_active: int = DEFAULT_MAX_ACTIVE
    from_user: bool = False  # False while the prices are the built-in placeholders

    def unit(self, resolution: str) -> Decimal:
        return self.prices.get(resolution, Decimal(0))

    def estimate(self, images: int, resolution: str) -> Decimal:
        """Estimated cost of `images` images at one resolution."""
        return self.unit(resolution) * max(0, int(images))

    def needs_confirmation(self, images: int, resolution: str) -> bool:
        """Ask first when a click sends more than `confirm_images` images or costs more than `confirm_cost`."""
        return images > self.confirm_images or self.estimate(images, resolution) > self.confirm_cost

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

    Keys: `prices` (mapping resolution -> amount) or `price_1K`…, `currency`,
    `confirm_images`, `confirm_cost`, `max_active`.
    """
    base = base or Pricing()
    problems: list[Problem] = []
    prices = dict(base.prices)
    given = values.get("prices") if isinstance(values.get("prices"), Mapping) else {}
    for res in RESOLUTIONS:
        raw = given.get(res, values.get(f"price_{res}"))
        if raw is None or str(raw).strip() == "":
            continue
        amount, problem = parse_amount(raw, f"Price per {res} image")
        if problem:
            problems.append(problem)
        else:
            prices[res] = amount
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
        if problem:
            problems.append(problem)
        else:
            confirm_cost = amount
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
        "price_1K": env_values.get("STUDIO_PRICE_1K"),
        "price_2K": env_values.get("STUDIO_PRICE_2K"),
        "price_4K": env_values.get("STUDIO_PRICE_4K"),
        "currency": env_values.get("STUDIO_CURRENCY"),
        "confirm_images": env_values.get("STUDIO_CONFIRM_IMAGES"),
        "confirm_cost": env_values.get("STUDIO_CONFIRM_COST"),
        "max_active": env_values.get("STUDIO_MAX_ACTIVE_TASKS"),
    }
    pricing, problems = build(values)
    given = any(values[f"price_{r}"] for r in RESOLUTIONS)
    return replace(pricing, from_user=given), problems


def load(store: Any, defaults: Pricing) -> Pricing:
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


def save(store: Any, pricing: Pricing) -> None:
    store.set_setting(SETTINGS_KEY, pricing.to_json())


def reset(store: Any) -> None:
    store.delete_setting(SETTINGS_KEY)
