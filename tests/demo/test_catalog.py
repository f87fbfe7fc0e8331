"""The catalog: rebuilt from the Online Retail data exactly as checked in."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from clarion.demo import extract

SOURCE = Path(__file__).parents[3] / "shared/data/online-retail/online_retail.csv.gz"


def test_categories_names_and_prices() -> None:
    assert extract.category_of("PARTY BUNTING") == "Party & Stationery"  # not "TIN"
    assert extract.category_of("DOLLY GIRL LUNCH BOX") == "Kitchen & Baking"  # not "DOLL"
    assert extract.category_of("SET OF 3 CAKE TINS PANTRY DESIGN") == "Kitchen & Baking"
    assert extract.category_of("POSTAGE") is None
    assert extract.display_name("PAPER CHAIN KIT 50'S CHRISTMAS ") == (
        "Paper Chain Kit 50's Christmas"
    )
    assert extract.display_name("SET OF 3  CAKE TINS.") == "Set of 3 Cake Tins"
    assert extract.retail_cents(2.95) == 799
    assert extract.retail_cents(0.4) == 99


def test_products_csv_is_what_extract_builds(capsys: pytest.CaptureFixture[str]) -> None:
    if not SOURCE.exists():
        pytest.skip(f"the Online Retail data is not at {SOURCE}")
    extract.main(str(SOURCE))
    built = capsys.readouterr().out
    checked_in = resources.files("clarion.demo").joinpath("products.csv").read_text("utf-8")
    assert built == checked_in
