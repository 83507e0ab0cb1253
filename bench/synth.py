"""A synthetic German retail population with ground truth, for accuracy and speed benchmarks.

Each person has 1–5 accounts across sources (webshop, newsletter, social login, app, loyalty till)
with realistic noise: typos, umlaut spellings, swapped names, moved addresses, formatting noise in
e-mails, phones and card numbers, missing attributes. Trap groups must never be merged: families
sharing landline + address + surname, twins, strangers sharing a company e-mail, and a placeholder
phone typed at the till for many customers.

    python -m bench.synth --persons 10000 --seed 1 --out accounts.jsonl --truth truth.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.names import NameDraw

GIVEN_F = ["Anna", "Maria", "Ursula", "Monika", "Petra", "Elisabeth", "Sabine", "Renate", "Helga", "Karin", "Brigitte", "Ingrid", "Erika", "Andrea", "Gisela", "Claudia", "Susanne", "Gabriele", "Christa", "Christine", "Hildegard", "Stefanie", "Birgit", "Barbara", "Julia", "Lena", "Laura", "Sophie", "Lea", "Hannah", "Emma", "Mia", "Leonie", "Lisa", "Katharina", "Johanna", "Sarah", "Jana", "Nina", "Melanie", "Sandra", "Nicole", "Jessica", "Jennifer", "Franziska", "Carolin", "Vanessa", "Jasmin", "Charlotte", "Marie", "Clara", "Greta", "Ida", "Paula", "Frieda", "Jürgen", "Zoë", "Bärbel", "Jörg", "Müge", "Gülay"]
GIVEN_M = ["Peter", "Michael", "Thomas", "Andreas", "Wolfgang", "Klaus", "Jürgen", "Günter", "Stefan", "Christian", "Uwe", "Werner", "Horst", "Frank", "Dieter", "Manfred", "Gerhard", "Hans", "Bernd", "Torsten", "Markus", "Matthias", "Alexander", "Martin", "Sebastian", "Daniel", "Jan", "Tobias", "Florian", "Lukas", "Jonas", "Leon", "Finn", "Paul", "Ben", "Elias", "Noah", "Luis", "Felix", "Maximilian", "Niklas", "Tim", "Philipp", "Simon", "David", "Moritz", "Julian", "Fabian", "Kevin", "Dennis", "Sven", "Oliver", "Björn", "Sören", "Jörg", "Jens", "Kai", "Lars", "Ralf", "Dirk"]
FAMILY = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier", "Lehmann", "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer", "Huber", "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Möller", "Weiß", "Jung", "Hahn", "Schubert", "Vogel", "Friedrich", "Keller", "Günther", "Frank", "Berger", "Winkler", "Roth", "Beck", "Lorenz", "Baumann", "Franke", "Albrecht", "Schuster", "Simon", "Ludwig", "Böhm", "Winter", "Kraus", "Martin", "Schumacher", "Krämer", "Vogt", "Stein", "Jäger", "Otto", "Sommer", "Groß", "Seidel", "Heinrich", "Brandt", "Haas", "Schreiber", "Graf", "Schulte", "Dietrich", "Ziegler", "Kuhn", "Kühn", "Pohl", "Engel", "Horn", "Busch", "Bergmann", "Thomas", "Voigt", "Sauer", "Arnold", "Wolff", "Pfeiffer", "Yılmaz", "Kaya", "Nowak", "Kowalski", "Öztürk"]
CITIES = (("Berlin", "10115"), ("Berlin", "10247"), ("Hamburg", "20095"), ("Hamburg", "22765"),
          ("München", "80331"), ("München", "81667"), ("Köln", "50667"), ("Frankfurt am Main", "60311"),
          ("Stuttgart", "70173"), ("Düsseldorf", "40213"), ("Leipzig", "04109"), ("Dortmund", "44135"),
          ("Essen", "45127"), ("Bremen", "28195"), ("Dresden", "01067"), ("Hannover", "30159"),
          ("Nürnberg", "90402"), ("Duisburg", "47051"), ("Bochum", "44787"), ("Wuppertal", "42103"),
          ("Bielefeld", "33602"), ("Bonn", "53111"), ("Münster", "48143"), ("Mannheim", "68159"),
          ("Karlsruhe", "76133"), ("Augsburg", "86150"), ("Wiesbaden", "65183"), ("Mönchengladbach", "41061"),
          ("Freiburg im Breisgau", "79098"), ("Lübeck", "23552"), ("Kiel", "24103"), ("Rostock", "18055"))
STREETS = ["Hauptstraße", "Schulstraße", "Gartenstraße", "Bahnhofstraße", "Dorfstraße", "Bergstraße", "Birkenweg", "Lindenstraße", "Kirchstraße", "Waldstraße", "Ringstraße", "Schillerstraße", "Goethestraße", "Am", "Markt", "Mühlenweg", "Friedhofstraße", "Rosenstraße", "Feldstraße", "Jahnstraße", "Mozartstraße", "Beethovenstraße", "Wiesenweg", "Lessingstraße", "Kastanienallee", "Eichendorffweg", "Königstraße", "Luisenstraße"]
PROVIDERS = ("gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.com", "yahoo.de", "icloud.com", "posteo.de")
SOURCES = ("webshop", "newsletter", "social", "app", "loyalty")
PLACEHOLDER_PHONE = "+49 30 12345678"
UMLAUT_VARIANTS = {"ä": ("ae", "a"), "ö": ("oe", "o"), "ü": ("ue", "u"), "ß": ("ss",), "ı": ("i",)}


@dataclass
class Person:
    key: str
    given: str
    family: str
    birth: str
    street: str
    number: str
    city: str
    postcode: str
    emails: list[str]
    mobile: str | None
    landline: str | None
    card: str
    handle: str
    trap: str | None = None
    extra_email: str | None = None
    accounts: list[dict[str, Any]] = field(default_factory=list)


def luhn_complete(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return digits + str((10 - total % 10) % 10)


def ascii_fold(text: str, rng: random.Random) -> str:
    for ch, variants in UMLAUT_VARIANTS.items():
        if ch in text.lower():
            v = rng.choice(variants)
            text = text.replace(ch, v).replace(ch.upper(), v.capitalize())
    return text


def typo(text: str, rng: random.Random) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 1)
    op = rng.random()
    if op < 0.33:
        return text[:i] + text[i + 1:]
    if op < 0.66:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text[:i] + rng.choice("aeinrst") + text[i + 1:]


class Population:
    def __init__(self, seed: int, names: str = "realistic"):
        self.rng = random.Random(seed)
        self.names = NameDraw(names, GIVEN_F, GIVEN_M, FAMILY)
        self.n = 0
        self.phones_used: set[str] = set()

    def _phone(self, mobile: bool) -> str:
        r = self.rng
        if mobile:
            return f"+49 1{r.choice('567')}{r.randint(0, 9)} {r.randint(1000000, 99999999)}"
        return f"+49 {r.choice(['30', '40', '89', '221', '69', '711', '211', '341'])} {r.randint(100000, 9999999)}"

    def _unique_phone(self, mobile: bool) -> str:
        while True:
            phone = self._phone(mobile)
            if phone not in self.phones_used:
                self.phones_used.add(phone)
                return phone

    def person(self, **overrides: Any) -> Person:
        r = self.rng
        self.n += 1
        female = r.random() < 0.5
        # Drawn even when overridden, so that a seed gives the same population as before.
        given = self.names.given(r, female)
        family = self.names.family(r)
        given, family = overrides.pop("given", given), overrides.pop("family", family)
        birth = overrides.pop("birth", f"{r.randint(1940, 2006)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}")
        city, postcode = overrides.pop("city", r.choice(CITIES))
        local = f"{given}.{family}".lower()
        for ch, variants in UMLAUT_VARIANTS.items():
            local = local.replace(ch, variants[0])
        # Unique per person (the person number), so no two strangers share an address by accident:
        # every shared identifier in the population is a deliberate trap.
        local = local.replace(" ", "") + str(self.n)
        return Person(
            key=f"P{self.n:08d}", given=given, family=family, birth=birth,
            street=overrides.pop("street", r.choice(STREETS)), number=overrides.pop("number", str(r.randint(1, 150))),
            city=city, postcode=postcode, emails=[f"{local}@{r.choice(PROVIDERS)}"],
            mobile=self._unique_phone(True) if r.random() < 0.8 else None,
            landline=overrides.pop("landline", self._unique_phone(False) if r.random() < 0.3 else None),
            card=luhn_complete("6001" + "".join(str(r.randint(0, 9)) for _ in range(11))),
            handle=f"{local.split('@')[0][:12]}{r.randint(1, 999)}", **overrides)

    def noisy_email(self, email: str) -> str:
        r = self.rng
        local, domain = email.split("@")
        if domain == "gmail.com" and r.random() < 0.3:
            local = local.replace(".", "") if r.random() < 0.5 else local + "+shop"
        if r.random() < 0.3:
            local = local.capitalize()
        return (" " if r.random() < 0.1 else "") + f"{local}@{domain.upper() if r.random() < 0.1 else domain}"

    def noisy_phone(self, phone: str) -> str:
        r = self.rng
        digits = phone.replace(" ", "")
        style = r.random()
        if style < 0.3:
            return "0" + digits[3:6] + "/" + digits[6:]
        if style < 0.5:
            return "0049" + digits[3:]
        return phone

    def noisy_card(self, card: str) -> str:
        r = self.rng
        if r.random() < 0.4:
            return " ".join(card[i:i + 4] for i in range(0, len(card), 4))
        if r.random() < 0.2:
            return "-".join(card[i:i + 4] for i in range(0, len(card), 4))
        return card

    def name_noise(self, p: Person) -> tuple[str, str]:
        r = self.rng
        given, family = p.given, p.family
        roll = r.random()
        if roll < 0.15:
            family = ascii_fold(family, r)
        elif roll < 0.22:
            family = typo(family, r)
        elif roll < 0.27:
            given = typo(given, r)
        elif roll < 0.30:
            given, family = family, given
        if r.random() < 0.05:
            family = family.upper()
        return given, family

    def accounts(self, p: Person, n: int) -> list[dict[str, Any]]:
        r = self.rng
        out = []
        sources = r.sample(SOURCES, k=min(n, len(SOURCES)))
        if p.trap == "placeholder" and "loyalty" not in sources:
            sources[-1] = "loyalty"  # the placeholder phone is typed at the till
        moved = r.random() < 0.15
        for i, source in enumerate(sources):
            given, family = self.name_noise(p)
            acc: dict[str, Any] = {"source": source, "id": f"{source[:2].upper()}-{p.key}-{i}"}
            address = {"street": f"{p.street} {p.number}", "postcode": p.postcode, "city": p.city, "country": "DE"}
            if moved and i > 0:
                city, postcode = r.choice(CITIES)
                address = {"street": f"{r.choice(STREETS)} {r.randint(1, 150)}", "postcode": postcode, "city": city,
                           "country": "DE"}
            email = p.extra_email or p.emails[0]
            if source == "newsletter":
                acc.update(emails=[self.noisy_email(email)])
                if r.random() < 0.5:
                    acc["given_name"] = given
            elif source == "social":
                acc.update(social=[{"provider": r.choice(["instagram", "facebook"]), "handle": p.handle}],
                           given_name=given, family_name=family, emails=[self.noisy_email(email)])
            elif source == "app":
                acc.update(given_name=given, family_name=family, birth_date=self._date(p.birth))
                phone = p.mobile or p.landline
                if phone:
                    acc["phones"] = [self.noisy_phone(phone)]
                if r.random() < 0.9:  # apps register with an e-mail address
                    acc["emails"] = [self.noisy_email(email)]
            elif source == "loyalty":
                acc.update(given_name=given, family_name=family, loyalty_cards=[self.noisy_card(p.card)],
                           address=address)
                phone = p.landline or p.mobile
                if p.trap == "placeholder":
                    acc["phones"] = [PLACEHOLDER_PHONE]
                elif phone and r.random() < 0.6:
                    acc["phones"] = [self.noisy_phone(phone)]
                if r.random() < 0.7:  # asked at sign-up for birthday offers
                    acc["birth_date"] = self._date(p.birth)
            else:  # webshop
                acc.update(given_name=given, family_name=family, birth_date=self._date(p.birth),
                           emails=[self.noisy_email(email)], address=address,
                           logins=[p.handle])
                if p.landline and p.trap == "family":
                    acc["phones"] = [self.noisy_phone(p.landline)]
                if r.random() < 0.3 and source != "newsletter":
                    acc.pop("birth_date", None)
            out.append(acc)
        return out

    def _date(self, iso: str) -> str:
        y, m, d = iso.split("-")
        return f"{int(d)}.{int(m)}.{y}" if self.rng.random() < 0.3 else iso


def generate(persons: int, seed: int = 1, names: str = "realistic"
             ) -> Iterator[tuple[list[dict[str, Any]], str, str | None]]:
    """Yields (accounts, person key, trap group id or None) person by person. `names`: how names
    are drawn (bench.names)."""
    pop = Population(seed, names)
    r = pop.rng
    made = 0
    group = 0
    while made < persons:
        roll = r.random()
        group += 1
        if roll < 0.04 and persons - made >= 3:  # family: landline, address, surname shared
            head = pop.person(trap="family")
            members = [head] + [pop.person(family=head.family, landline=head.landline, street=head.street,
                                           number=head.number, city=(head.city, head.postcode), trap="family")
                                for _ in range(r.randint(1, 3))]
            # Household members have different given names (compared among all of them, not only
            # with the head): two "Karin Horn"s at one address without birth dates are not a trap
            # any evidence could resolve.
            names: set[str] = set()
            members = [m for m in members if not (m.given in names or names.add(m.given))]
        elif roll < 0.06 and persons - made >= 2:  # twins
            head = pop.person(trap="twins")
            twin = pop.person(family=head.family, birth=head.birth, street=head.street, number=head.number,
                              city=(head.city, head.postcode), landline=head.landline, trap="twins")
            members = [head, twin] if twin.given != head.given else [head]
        elif roll < 0.08 and persons - made >= 3:  # colleagues sharing a company e-mail
            company = f"info@firma-{group}.de"
            members = [pop.person(trap="company", extra_email=company) for _ in range(r.randint(2, 4))]
        elif roll < 0.10:  # the till's placeholder phone
            members = [pop.person(trap="placeholder")]
        else:
            members = [pop.person()]
        trap_id = f"T{group}" if members[0].trap and members[0].trap != "placeholder" else (
            "T-placeholder" if members[0].trap == "placeholder" else None)
        for m in members:
            n = r.choices([1, 2, 3, 4, 5], weights=[25, 30, 25, 12, 8])[0]
            if m.trap == "placeholder":
                n = max(n, 2)
            accounts = pop.accounts(m, n)
            yield accounts, m.key, trap_id
            made += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--names", choices=("realistic", "uniform"), default="realistic")
    parser.add_argument("--out", required=True)
    parser.add_argument("--truth", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as out, open(args.truth, "w") as truth:
        for accounts, key, trap in generate(args.persons, args.seed, args.names):
            for acc in accounts:
                out.write(json.dumps(acc, ensure_ascii=False) + "\n")
                truth.write(json.dumps({"unique_id": f"{acc['source']}:{acc['id']}", "person": key,
                                        "trap": trap}) + "\n")


if __name__ == "__main__":
    main()
