"""Pure guard decisions."""

from __future__ import annotations

from services.identity.domain.guards import (
    Candidate,
    ConstrainedUnion,
    GivenNames,
    Traits,
    conflict,
    names_compatible,
    oriented,
)


def test_names_tolerate_typos_prefixes_and_full_swaps_but_not_families():
    assert names_compatible("lena", "lnea")  # swapped neighbours: one typo
    assert names_compatible("christoph", "christopher")
    assert not names_compatible("lena", "lisa")
    # A slip on an umlaut is one typo, though folding spells it with two letters ("joerg").
    assert names_compatible("joerg", "jrg")
    assert names_compatible("soeren", "saren")
    assert not names_compatible("joerg", "juergen")
    assert conflict(Traits("anna", "schmidt"), Traits("schmidt", "anna")) is None  # fields swapped
    # One shared surname is what a family has, even when one record has its fields swapped.
    assert conflict(Traits("charlotte", "wolff"), Traits("wolff", "soeren")) == "conflicting_given_name"
    # A record with only a given name may hold the family name typed into it (newsletter sign-ups)…
    assert conflict(Traits("schmitz", None), Traits("renate", "schmitz")) is None
    # …but two different given names stay a conflict when neither record has a family name.
    assert conflict(Traits("renate", None), Traits("petra", None)) == "conflicting_given_name"
    assert conflict(Traits("renate", None), Traits("petra", "schmitz")) == "conflicting_given_name"
    assert conflict(Traits("anna", None, "1980-01-02"), Traits("anna", None, "1980-02-01")) is None
    assert conflict(Traits("anna", None, "1980-01-02"), Traits("anna", None, "1975-06-30")) == "conflicting_birth_date"


def test_constrained_union_keeps_conflicting_members_apart():
    people = {
        "mother": Candidate("mother", 1, "", traits=[Traits("petra", "krause", "1970-03-02")]),
        "son_app": Candidate("son_app", 2, "", traits=[Traits("jonas", "krause", "2001-07-19")]),
        "son_shop": Candidate("son_shop", 3, "", traits=[Traits("jonas", "krause", None)]),
    }
    union = ConstrainedUnion(people, set(), {})
    assert not union.join("mother", "son_app")
    assert union.join("son_app", "son_shop")
    assert not union.join("mother", "son_shop")
    assert sorted(len(g) for g in union.groups()) == [1, 2]
    blocked = ConstrainedUnion(people, {("son_app", "son_shop")}, {})
    assert not blocked.join("son_shop", "son_app")


def test_two_established_given_names_are_two_people_however_close_their_spelling():
    names = GivenNames.of(["jan"] * 40 + ["jana"] * 35 + ["christian"] * 30 + ["christine"] * 12
                          + ["baerbel"] * 60 + ["barbel"] * 3 + ["andreas"] * 1000 + ["andrea"] * 11
                          + ["anna"] * 500 + ["anja"] * 25)
    assert names.counts == {"jan": 40, "jana": 35, "christian": 30, "christine": 12, "baerbel": 60,
                            "andreas": 1000, "andrea": 11, "anna": 500, "anja": 25}  # "barbel": under ten
    assert not names_compatible("jan", "jana", names)  # a prefix, but both are names in their own right
    assert not names_compatible("christian", "christine", names)
    assert conflict(Traits("jan", "schulze"), Traits("jana", "schulze"), names) == "conflicting_given_name"
    # A rare spelling next to a common name is a typo of it, as without the table.
    assert names_compatible("baerbel", "barbel", names)
    assert names_compatible("jan", "jna", names)
    # "andrea" is established, but not 2 % of "andreas": it may be typos of it, so spelling decides;
    # "anja" is 5 % of "anna", a name of its own (typos of a name are a few in a thousand).
    assert names_compatible("andreas", "andrea", names)
    assert not names_compatible("anna", "anja", names)
    assert names_compatible("jan", "jana")  # no table (a model trained before it): spelling alone
    union = ConstrainedUnion({"jan": Candidate("jan", 1, "", traits=[Traits("jan", "schulze")]),
                              "jana": Candidate("jana", 2, "", traits=[Traits("jana", "schulze")])}, set(), {}, names)
    assert not union.join("jan", "jana")


def test_names_entered_the_wrong_way_round_are_compared_the_right_way_round():
    """Two family members both entered surname first share the given-name field: read the right
    way round (the family field holds an established given name, the given field none), they are
    Wendelin and Frank."""
    names = GivenNames.of(["wendelin"] * 12 + ["frank"] * 400 + ["otto"] * 15 + ["karl"] * 20 + ["lehmann"] * 15
                          + ["dirk"] * 250)
    assert oriented(Traits("ziegengold", "wendelin"), names) == Traits("wendelin", "ziegengold")
    assert conflict(Traits("ziegengold", "wendelin"), Traits("ziegengold", "frank"), names) == "conflicting_given_name"
    assert conflict(Traits("ziegengold", "wendelin"), Traits("wendelin", "ziegengold"), names) is None
    # A common surname entered as a given name is on a few accounts: still far rarer than the name.
    assert conflict(Traits("lehmann", "dirk"), Traits("lehmann", "frank"), names) == "conflicting_given_name"
    # A surname that is also a given name stays where it is beside an established given name.
    assert oriented(Traits("karl", "otto"), names) == Traits("karl", "otto")
    assert conflict(Traits("ziegengold", "wendelin"), Traits("ziegengold", "frank")) is None  # no table: as before
