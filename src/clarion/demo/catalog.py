"""The demo shop's catalog: 100 gift products in eight categories, prices in pence.

The products are real ones from the Online Retail data set (UCI id 352, Chen 2015,
CC BY 4.0, doi:10.24432/C5BW33); `extract.py` says how `products.csv` was built from it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

CURRENCY = "GBP"
SHOP_URL = "https://shop.example.com"  # a reserved domain (RFC 2606): nothing real is linked


@dataclass(frozen=True, slots=True)
class Product:
    """A product as the shop sells it; `price_cents` is in minor units of `CURRENCY`."""

    product_id: str
    sku: str
    name: str
    category: str
    price_cents: int
    popularity: int  # invoices that held it in the source data: how often it sells

    @property
    def slug(self) -> str:
        """The product's URL path segment."""
        return self.name.lower().replace(" ", "-").replace("/", "-")

    def properties(self) -> dict[str, Any]:
        """The product as Segment's e-commerce spec describes one (`price` a decimal)."""
        return {
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "category": self.category,
            "price": decimal(self.price_cents),
            "url": f"{SHOP_URL}/products/{self.slug}",
        }


def decimal(cents: int) -> float:
    """Minor units as the decimal amount Segment's money fields carry (1299 -> 12.99)."""
    return round(cents / 100, 2)


@cache
def load_catalog() -> tuple[Product, ...]:
    """The 100 products, most popular first."""
    text = resources.files(__package__).joinpath("products.csv").read_text(encoding="utf-8")
    return tuple(
        Product(
            product_id=f"prd_{row['sku'].lower()}",
            sku=row["sku"],
            name=row["name"],
            category=row["category"],
            price_cents=int(row["price_cents"]),
            popularity=int(row["orders_in_source"]),
        )
        for row in csv.DictReader(io.StringIO(text))
    )


def categories() -> tuple[str, ...]:
    """The catalog's categories, in a stable order."""
    return tuple(sorted({product.category for product in load_catalog()}))
