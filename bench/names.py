"""Given and family names drawn with German frequencies, so that namesakes are as rare as they are.

A population drawn uniformly from a hundred common surnames holds about seventy times the
namesakes a real German one does, and no name in it is rarer than any other: equal names say
nothing there, although in a real population a rare surname is strong evidence. Here surnames
follow the shape of the German phone book (the Digitales Familiennamenwörterbuch counts Müller in
about 0.86 % of the population, Schmidt 0.64 %, Hoffmann, tenth, 0.24 %; Germany has over half a
million surnames): the common names of `FAMILY_HEAD` by a power law, then a long tail of
compound surnames (Steinwalder, Lindhofmann) built from German name parts. Given names follow a
power law over a list per sex, commonest first.

`uniform` draws as the benchmarks did before 2026-12-08, for comparison with older figures.
"""

from __future__ import annotations

import bisect
import itertools
import random
from functools import cache

# Shares of the population (phone-book counts × 2.8 over 83M people, rounded).
MUELLER_SHARE = 0.0086
HEAD_EXPONENT = 0.56  # Müller 0.86 % to Hoffmann 0.24 % over ten ranks
TAIL_NAMES = 200_000
TAIL_OFFSET = 300  # the tail's first names are about as common as the head's last ones
GIVEN_EXPONENT = 0.7

_STEMS = ("Acker", "Adler", "Alt", "Apfel", "Asch", "Bach", "Bären", "Berg", "Birk", "Blum", "Brand",
          "Breit", "Brink", "Bruch", "Brunn", "Buch", "Burg", "Busch", "Dorn", "Eber", "Eck", "Eich",
          "Eisen", "Erl", "Esch", "Fahr", "Feld", "Fels", "Fink", "Forst", "Fried", "Frisch", "Gold",
          "Grab", "Grün", "Hage", "Hain", "Hart", "Hasel", "Heide", "Hell", "Herz", "Hirsch", "Hoch",
          "Hof", "Hohen", "Holz", "Hub", "Kalk", "Kamm", "Kessel", "Kirch", "Klee", "Kling", "Knapp",
          "Kolb", "Korn", "Kreuz", "Kron", "Lahn", "Land", "Lauten", "Lehm", "Lind", "Loh", "Mark",
          "Matt", "Mehl", "Moor", "Moos", "Mühl", "Nagel", "Nord", "Ober", "Ost", "Pfaff", "Quell",
          "Rab", "Rath", "Reh", "Reich", "Ried", "Ring", "Rohr", "Rosen", "Rot", "Sand", "Sattel",
          "Schar", "Schön", "Schwan", "See", "Sieg", "Silber", "Sonnen", "Stahl", "Stein", "Stern",
          "Stock", "Storch", "Sturm", "Tann", "Tief", "Ulm", "Unter", "Wald", "Wall", "Wasser", "Weid",
          "Wend", "Wester", "Wies", "Wild", "Wind", "Zell", "Ziegen", "Düssel", "Gräf", "Höf", "Kött")
_ENDINGS = ("mann", "er", "ner", "ler", "hoff", "hof", "meier", "meyer", "maier", "berg", "berger",
            "feld", "felder", "bach", "bacher", "dorf", "dörfer", "hagen", "hausen", "häuser", "kamp",
            "kämper", "stein", "wald", "brink", "busch", "horst", "inger", "ing", "beck", "roth", "rath",
            "kötter", "kemper", "reuther", "gruber", "huber", "lechner", "bauer", "ke", "ow", "itz", "ler",
            "schmidt", "müller", "brück", "mühl", "wein", "haus", "holt")

# Beyond the benchmarks' common names (bench.synth), rarer ones of the same generations.
_MORE_GIVEN_F = ("Heike", "Silke", "Anja", "Kerstin", "Martina", "Tanja", "Doris", "Ilse", "Irmgard", "Waltraud",
                 "Gertrud", "Hannelore", "Rosemarie", "Marianne", "Edith", "Annegret", "Dagmar", "Angelika",
                 "Cornelia", "Manuela", "Simone", "Yvonne", "Daniela", "Katrin", "Antje", "Ines", "Svenja",
                 "Miriam", "Annika", "Theresa", "Amelie", "Luisa", "Emilia", "Mila", "Ronja", "Lotte",
                 "Wiebke", "Frauke", "Gesche", "Imke", "Tjarda", "Hedwig", "Mechthild", "Roswitha", "Adelheid",
                 "Liesel", "Annelie", "Henrike", "Friederike", "Merle", "Thea", "Elif", "Ayşe", "Zeynep",
                 "Agnieszka", "Małgorzata", "Olga", "Svetlana", "Natalia", "Ioana")
_MORE_GIVEN_M = ("Rainer", "Jochen", "Holger", "Heiko", "Carsten", "Volker", "Norbert", "Rüdiger", "Detlef",
                 "Wilfried", "Helmut", "Heinz", "Karl", "Otto", "Walter", "Kurt", "Erich", "Ernst", "Friedrich",
                 "Hartmut", "Gunnar", "Malte", "Hauke", "Ole", "Timo", "Nils", "Marvin", "Henrik", "Jannik",
                 "Till", "Vincent", "Anton", "Emil", "Theo", "Mats", "Jakob", "Konstantin", "Benedikt",
                 "Quirin", "Korbinian", "Wendelin", "Eberhard", "Reinhold", "Siegfried", "Gottfried", "Ulf",
                 "Arne", "Bodo", "Enno", "Fiete", "Mehmet", "Mustafa", "Emre", "Burak", "Piotr", "Krzysztof",
                 "Dmitri", "Sergej", "Andrei", "Bogdan")


def _power_weights(n: int, exponent: float, offset: int = 0) -> list[float]:
    return [(rank + offset) ** -exponent for rank in range(1, n + 1)]


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


@cache
def tail_surname(rank: int) -> str:
    """The tail's surname of one rank: the same in every population (a country's names do not
    depend on the sample). Two ranks may share a name; that name is then the commoner."""
    r = random.Random(f"surname/{rank}")
    first = r.choice(_STEMS)
    if r.random() < 0.3:
        return first + r.choice(_ENDINGS)
    second = r.choice(_STEMS)
    while second == first:
        second = r.choice(_STEMS)
    return first + second.lower() + (r.choice(_ENDINGS) if r.random() < 0.5 else "")


class NameDraw:
    """Draws given and family names. `realistic`: German frequencies (see the module docstring);
    `uniform`: every listed name equally likely, as the benchmarks drew before 2026-12-08."""

    def __init__(self, kind: str, given_f: list[str], given_m: list[str], family: list[str]):
        if kind not in ("realistic", "uniform"):
            raise ValueError(f"unknown name distribution {kind!r}")
        self.kind = kind
        self._given = {True: list(given_f), False: list(given_m)}
        self._family = list(family)
        if kind == "realistic":
            self._given = {True: _distinct(given_f, _MORE_GIVEN_F), False: _distinct(given_m, _MORE_GIVEN_M)}
            self._given_cum = {sex: _cumulative(_power_weights(len(names), GIVEN_EXPONENT))
                               for sex, names in self._given.items()}
            head = [MUELLER_SHARE * w for w in _power_weights(len(family), HEAD_EXPONENT)]
            tail = _power_weights(TAIL_NAMES, 1.0, TAIL_OFFSET)
            scale = (1.0 - sum(head)) / sum(tail)
            self._family_cum = _cumulative(head + [w * scale for w in tail])

    def given(self, rng: random.Random, female: bool) -> str:
        names = self._given[female]
        if self.kind == "uniform":
            return rng.choice(names)
        cum = self._given_cum[female]
        return names[bisect.bisect_right(cum, rng.random() * cum[-1])]

    def family(self, rng: random.Random) -> str:
        if self.kind == "uniform":
            return rng.choice(self._family)
        rank = bisect.bisect_right(self._family_cum, rng.random() * self._family_cum[-1])
        return self._family[rank] if rank < len(self._family) else tail_surname(rank - len(self._family))


def _distinct(names: list[str], more: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys([*names, *more]))
