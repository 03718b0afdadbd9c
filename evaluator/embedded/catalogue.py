"""Deterministic synthetic product catalogue: the project's embedded default data.

Each item is a dict ``{"title", "details", "category", "price"}``. Prices follow a
log-linear model whose every input is visible in the item's text::

    log(price) = log(category base)
               + log(product-type multiplier)     # "Stand Mixer", "Hammer Drill", ...
               + log(brand-tier multiplier)       # budget 0.55 ... luxury 2.4
               + log(material multiplier)
               + sum(log(feature multiplier))     # 0-3 features, e.g. "Cordless"
               + spec_slope * log(spec / spec_ref)  # wattage, quarts, driver mm, ...
               + 0.06 * (warranty years - 1)
               + Normal(0, NOISE_SD)

and the result is clipped to [MIN_PRICE, MAX_PRICE] and rounded to cents. With
the tables below, prices span roughly $5-$900 with a right skew (median near $100).
Model names and filler sentences are random (from the seeded generator only) and
carry no price signal, so a model cannot memorise items but can learn the rules.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import pandas as pd

MIN_PRICE = 1.0
MAX_PRICE = 999.0
NOISE_SD = 0.2
WARRANTY_SLOPE = 0.06
WARRANTY_YEARS = (1, 1, 2, 2, 3, 5)
TIER_MULT = {"budget": 0.55, "mid": 1.0, "premium": 1.6, "luxury": 2.4}


class Spec(NamedTuple):
    label: str  # details label, e.g. "Wattage"
    unit: str  # details unit, e.g. "W"
    title_fmt: str  # title fragment, e.g. "{v}-Quart"
    values: tuple[int, ...]
    slope: float  # elasticity of price w.r.t. the spec value
    ref: float  # spec value with multiplier 1.0


class Category(NamedTuple):
    name: str
    base: float  # dollars for a mid-tier, reference-spec, featureless item
    types: tuple[tuple[str, float], ...]
    brands: tuple[tuple[str, str], ...]  # (brand, tier)
    materials: tuple[tuple[str, float], ...]
    features: tuple[tuple[str, float], ...]
    spec: Spec


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Kitchen Appliances",
        45.0,
        (("Stand Mixer", 2.2), ("Blender", 1.0), ("Toaster", 0.5), ("Food Processor", 1.4), ("Air Fryer", 1.1)),
        (("Kitchora", "budget"), ("HomeChef", "mid"), ("Cuisello", "premium"), ("Brevanti", "luxury"), ("Tasti", "budget")),
        (("Plastic", 0.8), ("Stainless Steel", 1.25), ("Brushed Aluminum", 1.1)),
        (("10 Speeds", 1.15), ("Digital Display", 1.2), ("Dishwasher-Safe Parts", 1.1), ("Timer", 1.05), ("Glass Jar", 1.15)),
        Spec("Wattage", "W", "{v} W", (300, 500, 800, 1000, 1200, 1500), 0.5, 800),
    ),
    Category(
        "Power Tools",
        55.0,
        (("Hammer Drill", 1.3), ("Circular Saw", 1.4), ("Impact Driver", 1.1), ("Random Orbit Sander", 0.8), ("Jigsaw", 0.9)),
        (("ToolPro", "budget"), ("Workman", "mid"), ("Ironforge", "premium"), ("Hiltwerk", "luxury"), ("Brisk", "budget")),
        (("Plastic Housing", 0.85), ("Magnesium Housing", 1.3), ("Composite Housing", 1.0)),
        (
            ("Cordless", 1.3),
            ("Brushless Motor", 1.35),
            ("2 Batteries Included", 1.4),
            ("LED Work Light", 1.05),
            ("Carrying Case", 1.1),
        ),
        Spec("Voltage", "V", "{v}V", (12, 18, 20, 36, 40), 0.6, 18),
    ),
    Category(
        "Headphones",
        36.0,
        (("Over-Ear Headphones", 1.4), ("Earbuds", 0.8), ("On-Ear Headphones", 1.0), ("Studio Monitor Headphones", 1.5)),
        (("Sonix", "budget"), ("Audiva", "mid"), ("Klarhaus", "premium"), ("Bowers Lane", "luxury"), ("Zumo", "budget")),
        (("Plastic", 0.85), ("Aluminum", 1.15), ("Leather", 1.35)),
        (("Noise Cancelling", 1.7), ("Wireless", 1.35), ("Hi-Res Audio", 1.25), ("Built-In Microphone", 1.05), ("Foldable", 1.0)),
        Spec("Driver Size", "mm", "{v}mm Driver", (10, 30, 40, 45, 50), 0.3, 40),
    ),
    Category(
        "Music Gear",
        125.0,
        (("Electric Guitar", 1.6), ("Acoustic Guitar", 1.2), ("Bass Guitar", 1.5), ("Ukulele", 0.3), ("Classical Guitar", 0.9)),
        (("Stagemark", "budget"), ("Harmona", "mid"), ("Fenwood", "premium"), ("Gibsonne", "luxury"), ("Tonix", "budget")),
        (("Basswood", 0.8), ("Mahogany", 1.2), ("Rosewood", 1.35), ("Maple", 1.1)),
        (("Gig Bag Included", 1.1), ("Solid Top", 1.3), ("Locking Tuners", 1.15), ("Built-In Tuner", 1.05), ("Hand-Wired", 1.4)),
        Spec("Scale / Size", "in", "{v}-Inch", (21, 23, 25, 30, 34), 0.4, 25),
    ),
    Category(
        "Vacuum Cleaners",
        90.0,
        (
            ("Robot Vacuum", 1.6),
            ("Stick Vacuum", 1.0),
            ("Handheld Vacuum", 0.45),
            ("Canister Vacuum", 1.1),
            ("Upright Vacuum", 1.0),
        ),
        (("Cleanly", "budget"), ("Dustmate", "mid"), ("Vortexa", "premium"), ("Dysonique", "luxury"), ("Sweepo", "budget")),
        (("Plastic", 0.9), ("Polycarbonate", 1.0), ("Metal Wand", 1.15)),
        (("Cordless", 1.3), ("HEPA Filter", 1.2), ("Pet Hair Tool", 1.1), ("App Control", 1.35), ("Self-Emptying Base", 1.5)),
        Spec("Suction Power", "Pa", "{v}Pa", (1500, 2500, 4000, 6000, 9000), 0.35, 4000),
    ),
    Category(
        "Office Chairs",
        95.0,
        (
            ("Ergonomic Office Chair", 1.3),
            ("Gaming Chair", 1.1),
            ("Task Chair", 0.7),
            ("Executive Chair", 1.4),
            ("Drafting Stool", 0.6),
        ),
        (("Seatly", "budget"), ("Officio", "mid"), ("Steelmann", "premium"), ("Hermann Case", "luxury"), ("Comfy", "budget")),
        (("Mesh", 1.0), ("Faux Leather", 0.9), ("Genuine Leather", 1.5), ("Fabric", 0.85)),
        (
            ("Adjustable Lumbar Support", 1.2),
            ("4D Armrests", 1.25),
            ("Headrest", 1.1),
            ("Footrest", 1.05),
            ("Aluminum Base", 1.15),
        ),
        Spec("Weight Capacity", "lb", "{v} lb Capacity", (220, 250, 300, 350, 400), 0.8, 275),
    ),
    Category(
        "Smart Lighting",
        18.0,
        (("Smart Bulb", 0.6), ("LED Light Strip", 1.0), ("Floor Lamp", 2.2), ("Desk Lamp", 1.5), ("Ceiling Light", 2.5)),
        (("Glowy", "budget"), ("Lumina", "mid"), ("Philux", "premium"), ("Nanoleafy", "luxury"), ("Brighto", "budget")),
        (("Plastic", 0.85), ("Aluminum", 1.15), ("Glass", 1.2)),
        (("Color Changing", 1.3), ("Voice Control", 1.2), ("Dimmable", 1.1), ("Motion Sensor", 1.15), ("Hub Required", 0.85)),
        Spec("Brightness", "lm", "{v} Lumens", (400, 800, 1100, 1600, 2500), 0.4, 800),
    ),
)

FILLER: tuple[str, ...] = (
    "Perfect for everyday use at home or in the studio.",
    "Designed with a clean, modern look that fits any space.",
    "Easy to set up right out of the box.",
    "Makes a thoughtful gift for friends and family.",
    "Backed by friendly customer support.",
    "Built to last with careful attention to detail.",
    "Compact footprint saves valuable space.",
    "Tested for reliability before leaving the factory.",
    "A favourite among beginners and enthusiasts alike.",
    "Quick to clean and simple to maintain.",
    "Ships in recyclable, frustration-free packaging.",
    "Thoughtfully engineered for comfort and convenience.",
    "Great for small apartments, dorms and offices.",
    "User manual and quick start guide included.",
    "Available in several colours to match your style.",
    "Enjoy consistent results every single time.",
)
COLOURS: tuple[str, ...] = ("Black", "White", "Silver", "Graphite", "Red", "Blue", "Sage Green", "Beige")
_LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"


def _model_name(rng: random.Random) -> str:
    """A random model designation such as 'KX-412' or 'Vora 7S' (no price signal)."""
    prefix = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 3)))
    number = str(rng.randint(1, 999))
    style = rng.randrange(3)
    if style == 0:
        return f"{prefix}-{number}"
    if style == 1:
        return f"{prefix}{number}{rng.choice(('', 'S', 'X', 'Pro', 'Plus', 'Max'))}"
    return f"{prefix.capitalize()}{rng.choice(('ra', 'on', 'ex', 'ia', 'us'))} {number}"


def _log_price(
    cat: Category,
    type_mult: float,
    tier: str,
    material_mult: float,
    feature_mults: list[float],
    spec_value: int,
    warranty: int,
    noise: float,
) -> float:
    """The log-linear price model described in the module docstring."""
    return (
        math.log(cat.base)
        + math.log(type_mult)
        + math.log(TIER_MULT[tier])
        + math.log(material_mult)
        + sum(math.log(m) for m in feature_mults)
        + cat.spec.slope * math.log(spec_value / cat.spec.ref)
        + WARRANTY_SLOPE * (warranty - 1)
        + noise
    )


def _make_item(rng: random.Random) -> dict:
    """Draw one catalogue item (all randomness from ``rng``)."""
    cat = rng.choice(CATEGORIES)
    ptype, type_mult = rng.choice(cat.types)
    brand, tier = rng.choice(cat.brands)
    material, material_mult = rng.choice(cat.materials)
    features = rng.sample(cat.features, rng.randint(0, 3))
    spec_value = rng.choice(cat.spec.values)
    warranty = rng.choice(WARRANTY_YEARS)
    model = _model_name(rng)
    colour = rng.choice(COLOURS)
    filler = rng.sample(FILLER, rng.randint(1, 2))
    noise = rng.gauss(0.0, NOISE_SD)

    log_p = _log_price(cat, type_mult, tier, material_mult, [m for _, m in features], spec_value, warranty, noise)
    price = round(min(max(math.exp(log_p), MIN_PRICE), MAX_PRICE), 2)

    spec_txt = cat.spec.title_fmt.format(v=spec_value)
    title = ", ".join([f"{brand} {model} {spec_txt} {ptype}", *(f for f, _ in features[:2]), material])
    lines = [
        f"Brand: {brand}; Model: {model}; Type: {ptype}; Material: {material}; Colour: {colour}",
        f"{cat.spec.label}: {spec_value} {cat.spec.unit}; Warranty: {warranty} year{'s' if warranty > 1 else ''}",
        "Features: " + (", ".join(f for f, _ in features) if features else "none"),
        " ".join(filler),
    ]
    return {"title": title, "details": "\n".join(lines), "category": cat.name, "price": price}


def generate_catalogue(n: int = 2000, *, seed: int = 0) -> list[dict]:
    """Return ``n`` synthetic products; identical for the same ``(n, seed)`` on any machine."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = random.Random(seed)
    return [_make_item(rng) for _ in range(n)]


def catalogue_frame(n: int = 2000, *, seed: int = 0) -> pd.DataFrame:
    """The catalogue as a DataFrame with columns title, details, category, price."""
    return pd.DataFrame(generate_catalogue(n, seed=seed), columns=["title", "details", "category", "price"])
