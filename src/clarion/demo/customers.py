"""The demo shop's customers: who they are, where they live and how they shop.

Countries are weighted by the square root of the customers per country in the Online Retail
data set (a UK shop with customers across Europe and beyond, the UK damped so the others
show). Each customer's locale and time zone belong to their country; names come from Faker
in that locale. Contact details can never reach a real person: emails are at the reserved
example.com/.net/.org domains (RFC 2606), and phone numbers, given only in countries that
reserve a range for fiction (UK Ofcom 07700 900xxx, North America 555-01xx, France ARCEP
06 39 98 xx xx), are taken from that range.
"""

from __future__ import annotations

import enum
import random
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from clarion.demo.catalog import categories
from clarion.demo.rhythm import WINDOW_DAYS, Calendar

if TYPE_CHECKING:
    from faker import Faker

NAMESPACE = uuid.UUID("6f1d7c52-3b0e-4b8e-9a53-4c1a2e7d9b10")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
PHONE_SHARE = 0.6  # of customers where fictional numbers exist
EARLY_SIGN_UPS = 0.4  # share of customers who joined in the year's first 60 days


@dataclass(frozen=True, slots=True)
class Region:
    """A locale spoken in a country and a time zone where its speakers live."""

    faker_locale: str
    zone: str
    share: float = 1.0

    @property
    def locale(self) -> str:
        """The BCP 47 tag Segment's `context.locale` carries (`en-GB`)."""
        return self.faker_locale.replace("_", "-").replace("no-NO", "nb-NO")


@dataclass(frozen=True, slots=True)
class Country:
    """A country the shop sells to, and how many of its customers live there."""

    code: str
    weight: float
    regions: tuple[Region, ...]


def _country(code: str, weight: float, *regions: tuple[str, str, float]) -> Country:
    return Country(code, weight, tuple(Region(*region) for region in regions))


COUNTRIES = (
    _country("GB", 62.6, ("en_GB", "Europe/London", 1)),
    _country("DE", 9.7, ("de_DE", "Europe/Berlin", 1)),
    _country("FR", 9.3, ("fr_FR", "Europe/Paris", 1)),
    _country("ES", 5.5, ("es_ES", "Europe/Madrid", 0.9), ("es_ES", "Atlantic/Canary", 0.1)),
    _country("BE", 5.0, ("nl_BE", "Europe/Brussels", 0.6), ("fr_BE", "Europe/Brussels", 0.4)),
    _country("CH", 4.6, ("de_CH", "Europe/Zurich", 0.7), ("fr_CH", "Europe/Zurich", 0.3)),
    _country("PT", 4.4, ("pt_PT", "Europe/Lisbon", 1)),
    _country("IT", 3.7, ("it_IT", "Europe/Rome", 1)),
    _country("FI", 3.5, ("fi_FI", "Europe/Helsinki", 1)),
    _country("AT", 3.3, ("de_AT", "Europe/Vienna", 1)),
    _country("NO", 3.2, ("no_NO", "Europe/Oslo", 1)),
    _country("NL", 3.0, ("nl_NL", "Europe/Amsterdam", 1)),
    _country("DK", 3.0, ("da_DK", "Europe/Copenhagen", 1)),
    _country(
        "AU",
        3.0,
        ("en_AU", "Australia/Sydney", 0.45),
        ("en_AU", "Australia/Melbourne", 0.35),
        ("en_AU", "Australia/Perth", 0.2),
    ),
    _country("SE", 2.8, ("sv_SE", "Europe/Stockholm", 1)),
    _country("JP", 2.8, ("ja_JP", "Asia/Tokyo", 1)),
    _country("PL", 2.4, ("pl_PL", "Europe/Warsaw", 1)),
    _country(
        "US",
        2.0,
        ("en_US", "America/New_York", 0.45),
        ("en_US", "America/Chicago", 0.25),
        ("en_US", "America/Denver", 0.1),
        ("en_US", "America/Los_Angeles", 0.2),
    ),
    _country(
        "CA",
        2.0,
        ("en_CA", "America/Toronto", 0.5),
        ("fr_CA", "America/Toronto", 0.25),
        ("en_CA", "America/Vancouver", 0.25),
    ),
    _country("IE", 1.7, ("en_IE", "Europe/Dublin", 1)),
)
_COUNTRY_WEIGHTS = tuple(country.weight for country in COUNTRIES)


class Persona(enum.StrEnum):
    """How a customer shops over the year."""

    LOYAL = "loyal"  # a repeat buyer with a high lifetime value
    REGULAR = "regular"
    OCCASIONAL = "occasional"  # visits now and then, buys little or nothing
    CHURNED = "churned"  # active for a while after sign-up, then never again


# Persona: share of customers, visits per day of tenure, chance a visit ends in an order,
# chance an unbought visit leaves a cart behind, items per order.
PERSONAS: dict[Persona, tuple[float, float, float, float, tuple[int, int]]] = {
    Persona.LOYAL: (0.06, 0.12, 0.55, 0.15, (2, 6)),
    Persona.REGULAR: (0.44, 0.038, 0.25, 0.25, (1, 4)),
    Persona.OCCASIONAL: (0.34, 0.02, 0.1, 0.3, (1, 2)),
    Persona.CHURNED: (0.16, 0.09, 0.3, 0.25, (1, 3)),
}


@dataclass(frozen=True, slots=True)
class Customer:
    """A demo customer, as the shop knows them once they have signed up."""

    index: int
    user_id: str
    anonymous_id: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    country: str
    locale: str
    timezone: str
    birthday: date
    persona: Persona
    favourite_category: str
    signed_up_day: int  # index into the calendar's days
    last_active_day: int
    seed: int = field(repr=False)  # of this customer's own random stream

    @property
    def zone(self) -> ZoneInfo:
        """The customer's time zone."""
        return zone_named(self.timezone)


@cache
def zone_named(name: str) -> ZoneInfo:
    """The time zone called `name` (IANA), loaded once."""
    return ZoneInfo(name)


@cache
def _faker(locale: str) -> Faker:
    from faker import Faker  # only the demo needs Faker: keep the CLI start fast

    return Faker(locale)


def actor_rng(seed: int, kind: str, index: int) -> random.Random:
    """The random stream of one customer or visitor: independent of every other one."""
    return random.Random(f"clarion-demo/{seed}/{kind}/{index}")  # noqa: S311 - not secrets


def stable_id(seed: int, *parts: object) -> uuid.UUID:
    """An id derived from the seed and what it names, the same on every run."""
    return uuid.uuid5(NAMESPACE, "/".join(map(str, (seed, *parts))))


def generate_customers(seed: int, calendar: Calendar, count: int) -> Iterator[Customer]:
    """`count` customers, the same for the same seed and calendar."""
    phones = _PhoneBook()
    emails: set[str] = set()
    for index in range(count):
        rng = actor_rng(seed, "customer", index)
        country, region = draw_region(rng)
        first, last = _name(region, rng)
        persona = rng.choices(list(PERSONAS), weights=[p[0] for p in PERSONAS.values()])[0]
        signed_up, last_active, persona = _tenure(rng, calendar, persona)
        wants_phone = rng.random() < PHONE_SHARE
        yield Customer(
            index=index,
            user_id=f"u_{stable_id(seed, 'user', index).hex[:16]}",
            anonymous_id=str(stable_id(seed, "anonymous", index)),
            first_name=first,
            last_name=last,
            email=_unique_email(rng, first, last, emails),
            phone=phones.take(country, region.zone, rng) if wants_phone else None,
            country=country,
            locale=region.locale,
            timezone=region.zone,
            birthday=_birthday(rng, calendar.end),
            persona=persona,
            favourite_category=rng.choice(categories()),
            signed_up_day=signed_up,
            last_active_day=last_active,
            seed=rng.getrandbits(64),
        )


def _name(region: Region, rng: random.Random) -> tuple[str, str]:
    fake = _faker(region.faker_locale)
    fake.seed_instance(rng.getrandbits(64))
    if region.faker_locale == "ja_JP":  # a UK shop's Japanese customers sign up in rōmaji
        return fake.first_romanized_name(), fake.last_romanized_name()
    return fake.first_name(), fake.last_name()


def _tenure(rng: random.Random, calendar: Calendar, persona: Persona) -> tuple[int, int, Persona]:
    """Sign-up day and last active day; churned customers leave 20 to 150 days after."""
    last_day = WINDOW_DAYS - 1
    # An established shop: many customers joined early in the year, loyal ones all did.
    early = persona is Persona.LOYAL or rng.random() < EARLY_SIGN_UPS
    latest = 60 if early else last_day - 1
    signed_up = calendar.pick_days(rng, first=1, last=latest, count=1)[0]
    if persona is Persona.CHURNED:
        leaves = signed_up + rng.randint(20, 150)
        if leaves > last_day - 90:  # too recent to tell churn from a pause
            return signed_up, last_day, Persona.OCCASIONAL
        return signed_up, leaves, persona
    return signed_up, last_day, persona


def _birthday(rng: random.Random, today: date) -> date:
    age_days = int(rng.triangular(18, 80, 34) * 365.25)
    return today - timedelta(days=age_days)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _unique_email(rng: random.Random, first: str, last: str, taken: set[str]) -> str:
    first_part, last_part = _ascii(first) or "customer", _ascii(last) or "shopper"
    style = rng.randrange(3)
    local = (f"{first_part}.{last_part}", f"{first_part[0]}{last_part}", f"{first_part}{last_part}")
    base = local[style]
    domain = rng.choice(EMAIL_DOMAINS)
    email, suffix = f"{base}@{domain}", 1
    while email in taken:
        suffix += 1
        email = f"{base}{suffix}@{domain}"
    taken.add(email)
    return email


# North American area codes of each time zone's big cities.
_AREA_CODES = {
    "America/New_York": ("212", "617", "305"),
    "America/Chicago": ("312", "214"),
    "America/Denver": ("303",),
    "America/Los_Angeles": ("415", "206", "213"),
    "America/Toronto": ("416", "514", "613"),
    "America/Vancouver": ("604",),
}


class _PhoneBook:
    """Numbers from the ranges reserved for fiction, each given out once."""

    def __init__(self) -> None:
        self._given: set[str] = set()

    def take(self, country: str, zone: str, rng: random.Random) -> str | None:
        """A fresh fictional number in the country, or None when it has no such range."""
        for _ in range(20):  # ranges are small; give up rather than loop when one fills
            number = self._draw(country, zone, rng)
            if number is None:
                return None
            if number not in self._given:
                self._given.add(number)
                return number
        return None

    def _draw(self, country: str, zone: str, rng: random.Random) -> str | None:
        if country == "GB":
            return f"+447700900{rng.randrange(1000):03d}"
        if zone in _AREA_CODES:
            return f"+1{rng.choice(_AREA_CODES[zone])}55501{rng.randrange(100):02d}"
        if country == "FR":
            return f"+3363998{rng.randrange(10_000):04d}"
        return None


def draw_region(rng: random.Random) -> tuple[str, Region]:
    """A country, weighted by its share of customers, and one of its regions."""
    country = rng.choices(COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]
    region = rng.choices(country.regions, weights=[r.share for r in country.regions])[0]
    return country.code, region
