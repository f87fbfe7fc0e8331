"""Builds `products.csv`, the demo shop's catalog, from the Online Retail data set.

Run once by hand (the CSV it prints is checked in, so the demo needs no download):

    python -m clarion.demo.extract ../shared/data/online-retail/online_retail.csv.gz \
        > src/clarion/demo/products.csv

Online Retail (UCI id 352, Chen 2015, CC BY 4.0, doi:10.24432/C5BW33) lists the invoice lines
of a UK online gift retailer. From its sales (cancellations, returns and non-product codes
left out) this keeps the most-ordered products, at most `PER_CATEGORY` per category, sorted
into categories by keywords of their description. The retail price is the median wholesale
unit price times `MARKUP`, rounded up to the next .99.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
import statistics
import sys
from collections import defaultdict

PRODUCTS = 100
PER_CATEGORY = 15
MARKUP = 2.5

# First match wins, so the narrow categories come first.
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Christmas", ("CHRISTMAS", "SLEIGH", "ANGEL", "CRACKERS")),
    ("Cosy & Comfort", ("HOT WATER BOTTLE", "HAND WARMER", "HOTTIE")),
    ("Bags", ("BAG", "SHOPPER")),
    ("Candles & Lighting", ("T-LIGHT", "CANDLE", "LIGHT", "LANTERN")),
    (
        "Toys & Games",
        (
            "HARMONICA",
            "GAME",
            "SKITTLES",
            "DOLL",
            "SNAP",
            "DOMINOES",
            "SPINNING",
            "SKIPPING",
            "PLAYHOUSE",
            "CRAYONS",
            "COLOURING",
            "KNITTING",
            "TOY",
            "FELTCRAFT",
            "LADDERS",
        ),
    ),
    (
        "Kitchen & Baking",
        (
            "CAKE",
            "BAKING",
            "TIN",
            "JAM",
            "LUNCH BOX",
            "TEA",
            "MUG",
            "BOWL",
            "NAPKIN",
            "PLATE",
            "SPOON",
            "COOKIE",
            "SCALES",
            "BREAD",
            "RECIPE",
            "CUTLERY",
            "KITCHEN",
            "OVEN",
            "JUG",
            "EGG CUP",
            "CUPS",
            "MOULD",
            "SNACK",
        ),
    ),
    (
        "Party & Stationery",
        (
            "CARD",
            "PAPER",
            "NOTEBOOK",
            "STATIONERY",
            "PARTY",
            "BUNTING",
            "DOILIES",
            "RIBBON",
            "SEWING",
        ),
    ),
    (
        "Home Decor",
        (
            "HEART",
            "FRAME",
            "CLOCK",
            "SIGN",
            "DOORMAT",
            "WICKER",
            "CHALKBOARD",
            "KNOB",
            "HOOK",
            "CABINET",
            "CUSHION",
            "TRINKET",
            "HANGER",
            "ORNAMENT",
            "CHEST",
        ),
    ),
)
# Whole words, singular or plural: TIN must not match BUNTING, nor DOLL match DOLLY.
_PATTERNS = tuple(
    (category, re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")S?\b"))
    for category, words in CATEGORY_KEYWORDS
)
_SMALL_WORDS = frozenset({"of", "and", "in", "the", "with", "a", "on", "to", "or"})


def category_of(description: str) -> str | None:
    """The demo category of an Online Retail description, or None when none fits."""
    for category, pattern in _PATTERNS:
        if pattern.search(description):
            return category
    return None


def display_name(description: str) -> str:
    """`WHITE HANGING HEART T-LIGHT HOLDER` as `White Hanging Heart T-Light Holder`."""
    words = re.sub(r"\s+", " ", description).strip(" .").title().split(" ")
    shown = [w.lower() if i and w.lower() in _SMALL_WORDS else w for i, w in enumerate(words)]
    return " ".join(shown).replace("'S", "'s")


def retail_cents(wholesale: float) -> int:
    """The retail price in pence: the wholesale price marked up, rounded up to .99."""
    return math.ceil(wholesale * MARKUP) * 100 - 1


def main(path: str) -> None:
    """Print the catalog CSV built from the Online Retail file at `path`."""
    invoices: dict[str, set[str]] = defaultdict(set)
    prices: dict[str, list[float]] = defaultdict(list)
    names: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as source:
        for row in csv.DictReader(source):
            code, description = row["StockCode"], row["Description"].strip()
            if row["InvoiceNo"].startswith("C") or not description or not code[:1].isdigit():
                continue
            if int(row["Quantity"]) <= 0 or float(row["UnitPrice"]) <= 0:
                continue
            invoices[code].add(row["InvoiceNo"])
            prices[code].append(float(row["UnitPrice"]))
            names.setdefault(code, description)
    taken: dict[str, int] = defaultdict(int)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["sku", "name", "category", "price_cents", "orders_in_source"])
    chosen = 0
    for code in sorted(invoices, key=lambda c: (-len(invoices[c]), c)):
        category = category_of(names[code])
        if category is None or taken[category] >= PER_CATEGORY:
            continue
        taken[category] += 1
        price = retail_cents(statistics.median(prices[code]))
        writer.writerow([code, display_name(names[code]), category, price, len(invoices[code])])
        chosen += 1
        if chosen == PRODUCTS:
            break


if __name__ == "__main__":
    main(sys.argv[1])
