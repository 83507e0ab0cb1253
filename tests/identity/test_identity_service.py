"""Identity resolution through a real gRPC server on a real FalkorDB: deterministic links, the
over-merge guards, manual decisions, stable ids, training, explanations."""

from __future__ import annotations

import grpc
import pytest
from tessera.identity.v1 import identity_pb2 as pb
from tessera.identity.v1 import identity_pb2_grpc
from tessera.type.v1 import subject_pb2

from bench.synth import generate
from services.identity.cli import _raw_to_input
from services.identity.service import pair_id
from services.identity.store import IdentityStore
from tests.helpers import error_details

EMAIL, PHONE = subject_pb2.IDENTIFIER_KIND_EMAIL, subject_pb2.IDENTIFIER_KIND_PHONE


@pytest.fixture
def stack(stack_factory):
    return stack_factory("identity")


@pytest.fixture
def stub(stack):
    return identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))


def link(stub, source, ext, *, emails=(), phones=(), cards=(), **attrs):
    acc = pb.AccountInput(ref=subject_pb2.AccountRef(source=source, external_id=ext))
    for e in emails:
        acc.identifiers.add(kind=EMAIL, value=e)
    for p in phones:
        acc.identifiers.add(kind=PHONE, value=p)
    for c in cards:
        acc.identifiers.add(kind=subject_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value=c)
    for key, value in attrs.items():
        if key in ("street", "postcode", "city"):
            setattr(acc.attributes.address, key, value)
        else:
            setattr(acc.attributes, key, value)
    return stub.LinkAccount(pb.LinkAccountRequest(account=acc))


def ref(source, ext):
    return subject_pb2.AccountRef(source=source, external_id=ext)


def test_shared_normalised_identifier_links_deterministically(stub):
    a = link(stub, "webshop", "1", emails=["Anna.Schmidt@GoogleMail.com"], given_name="Anna")
    b = link(stub, "newsletter", "2", emails=["annaschmidt+news@gmail.com"])
    c = link(stub, "app", "3", phones=["0151 2345678"], emails=["anna.schmidt@gmail.com"], given_name="Anna")
    assert a.created_person
    assert b.person.name == a.person.name == c.person.name
    assert c.account.link_method == pb.LINK_METHOD_DETERMINISTIC
    by_phone = stub.LookupPerson(pb.LookupPersonRequest(subject=subject_pb2.Subject(
        identifier=subject_pb2.Identifier(kind=PHONE, value="+49 151 2345678"))))
    assert by_phone.name == a.person.name
    assert by_phone.account_count == 3


def test_link_response_shows_the_person_as_stored(stub):
    """A new person's view is built without reading it back; it must be what GetPerson reads,
    for a new person and for one an account joined."""
    first = link(stub, "webshop", "p1", emails=["lena.vogt@example.org"], given_name="Lena")
    assert first.created_person
    stored = stub.GetPerson(pb.GetPersonRequest(name=first.person.name))
    assert first.person == stored
    assert first.person.account_count == 1
    second = link(stub, "app", "p2", emails=["lena.vogt@example.org"], given_name="Lena")
    assert not second.created_person
    assert second.person == stub.GetPerson(pb.GetPersonRequest(name=first.person.name))
    assert second.person.account_count == 2


def test_family_sharing_a_landline_is_not_merged(stub):
    landline = "030 44556677"
    mother = link(stub, "loyalty", "m", phones=[landline], given_name="Petra", family_name="Krause",
                  birth_date="1970-03-02", street="Lindenstraße 4", postcode="10247", city="Berlin")
    son = link(stub, "loyalty", "s", phones=[landline], given_name="Jonas", family_name="Krause",
               birth_date="2001-07-19", street="Lindenstraße 4", postcode="10247", city="Berlin")
    assert son.person.name != mother.person.name
    assert son.created_person


def test_twins_with_everything_shared_but_the_given_name_stay_apart(stub):
    shared = {"family_name": "Vogel", "birth_date": "1995-05-05", "street": "Am Markt 1", "postcode": "80331",
              "city": "München"}
    one = link(stub, "webshop", "t1", phones=["089 1234567"], given_name="Lena", **shared)
    two = link(stub, "webshop", "t2", phones=["089 1234567"], given_name="Lisa", **shared)
    assert one.person.name != two.person.name


def test_role_addresses_never_link_but_personal_ones_do(stub):
    a = link(stub, "newsletter", "r1", emails=["Kontakt@Baeckerei-Sommer.de"])
    b = link(stub, "webshop", "r2", emails=["kontakt@baeckerei-sommer.de"], given_name="Ida")
    assert a.person.name != b.person.name


def test_strangers_sharing_a_company_address_stay_apart(stub):
    people = [link(stub, "webshop", f"c{i}", emails=["einkauf.team@firma-xyz.de"], given_name=name, family_name=family)
              for i, (name, family) in enumerate([("Karl", "Ott"), ("Sabine", "Roth"), ("Ute", "Beck")])]
    assert len({p.person.name for p in people}) == 3


def test_placeholder_phone_typed_for_many_customers_glues_nobody(stub):
    names = ["Anton", "Berta", "Cem", "Dora", "Emil", "Frida", "Gustav", "Hanna"]
    persons = {link(stub, "till", f"p{i}", phones=["+49 30 0000000"], given_name=name).person.name
               for i, name in enumerate(names)}
    assert len(persons) == len(names)
    last = link(stub, "till", "p-last", phones=["+49 30 0000000"], given_name="Anton")
    assert last.created_person  # contested: no longer links, even on a plausible name
    assert any("shared by different persons" in p.reason for p in last.problems)


def test_identifier_on_too_many_accounts_stops_linking(stub):
    persons = [link(stub, "till", f"q{i}", phones=["+49 40 1111111"]).person.name for i in range(12)]
    assert len(set(persons[:10])) == 1  # no names to tell them apart: the first ten link
    assert persons[10] != persons[0]
    assert persons[11] != persons[0]


def test_per_kind_identifier_limit_blocks_a_merge(stub):
    cards = [f"60012345678{i}" for i in range(6)]
    owner = link(stub, "loyalty", "owner", cards=cards[:4], given_name="Olga")
    other = link(stub, "loyalty", "other", cards=cards[4:], given_name="Olga")
    glue = link(stub, "webshop", "glue", cards=[cards[0], cards[4]], given_name="Olga")
    assert glue.person.name == owner.person.name  # 5 distinct cards: within the limit
    assert glue.merged_persons == []  # joining `other` too would make 6 cards, over the limit of 5
    person = stub.GetPerson(pb.GetPersonRequest(name=other.person.name))
    assert person.name == other.person.name


def test_merge_and_split_round_trip_keeps_stable_ids(stub):
    a = link(stub, "webshop", "ma", given_name="Maria", birth_date="1980-01-01").person
    b = link(stub, "loyalty", "mb", given_name="Maria", birth_date="1980-01-01").person
    merged = stub.MergePersons(pb.MergePersonsRequest(names=[b.name, a.name], reason="call centre"))
    assert merged.name == a.name  # the oldest id survives
    assert b.name in merged.merged_persons
    assert stub.GetPerson(pb.GetPersonRequest(name=b.name)).name == a.name  # old id redirects
    split = stub.SplitPerson(pb.SplitPersonRequest(name=a.name, accounts=[ref("loyalty", "mb")], reason="wrong",
                                                   request_id="split-1"))
    assert split.remaining.name == a.name
    assert split.split_off.name not in (a.name, b.name)
    again = stub.SplitPerson(pb.SplitPersonRequest(name=a.name, accounts=[ref("loyalty", "mb")], reason="wrong",
                                                   request_id="split-1"))
    assert again.split_off.name == split.split_off.name  # idempotent
    relinked = link(stub, "loyalty", "mb", given_name="Maria", birth_date="1980-01-01")
    assert relinked.person.name == split.split_off.name  # the split is respected on re-link
    kinds = [c.kind for c in _changes(stub)]
    assert pb.PersonChange.KIND_MERGED in kinds
    assert pb.PersonChange.KIND_SPLIT in kinds


def test_a_split_writes_its_cannot_link_decisions_with_the_move_and_owns_its_request_id(stub):
    anna = link(stub, "webshop", "sa1", emails=["anna.split@example.org"], given_name="Anna").person
    link(stub, "app", "sa2", emails=["anna.split@example.org"], given_name="Anna")
    link(stub, "loyalty", "sa3", emails=["anna.split@example.org"], given_name="Anna")
    bert = link(stub, "webshop", "sb1", emails=["bert.split@example.org"], given_name="Bert").person
    link(stub, "app", "sb2", emails=["bert.split@example.org"], given_name="Bert")
    split = stub.SplitPerson(pb.SplitPersonRequest(name=anna.name, accounts=[ref("app", "sa2")],
                                                   request_id="shared-request"))
    # Every account that stayed has a cannot-link decision with the one that left, so re-sending the
    # moved account's unchanged data, which shares the e-mail, keeps it apart.
    for stay in (ref("webshop", "sa1"), ref("loyalty", "sa3")):
        explained = stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("app", "sa2"), account_b=stay))
        assert explained.manual_decision.kind == pb.LinkDecision.KIND_CANNOT_LINK
        assert explained.manual_decision.author == "split"
    assert link(stub, "app", "sa2", emails=["anna.split@example.org"],
                given_name="Anna").person.name == split.split_off.name
    # The same request id for another person's split, or for other accounts, is refused and moves nothing.
    for person, account in ((bert.name, ref("app", "sb2")), (anna.name, ref("loyalty", "sa3"))):
        with pytest.raises(grpc.RpcError) as err:
            stub.SplitPerson(pb.SplitPersonRequest(name=person, accounts=[account], request_id="shared-request"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(err.value)[0] == "REQUEST_ID_REUSED"
    assert stub.GetPerson(pb.GetPersonRequest(name=bert.name)).account_count == 2
    assert stub.GetPerson(pb.GetPersonRequest(name=split.split_off.name)).account_count == 1
    again = stub.SplitPerson(pb.SplitPersonRequest(name=anna.name, accounts=[ref("app", "sa2")],
                                                   request_id="shared-request"))
    assert again.split_off.name == split.split_off.name  # the same request again: nothing new
    # A request id that starts or ends with whitespace, or holds control characters, is refused as
    # everywhere else (services/common/client_ids.py), and moves nothing.
    for bad in ("shared-request ", "shared\u0001request"):
        with pytest.raises(grpc.RpcError) as err:
            stub.SplitPerson(pb.SplitPersonRequest(name=anna.name, accounts=[ref("loyalty", "sa3")], request_id=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error_details(err.value)[1]) == {"request_id"}
    assert stub.GetPerson(pb.GetPersonRequest(name=anna.name)).account_count == 2


def _changes(stub):
    out = []
    stream = stub.WatchPersonChanges(pb.WatchPersonChangesRequest(after_sequence=0))
    try:
        for change in stream:
            out.append(change)
            if change.kind == pb.PersonChange.KIND_SPLIT:
                break
    finally:
        stream.cancel()
    return out


def test_cannot_link_splits_and_is_respected_by_later_links(stub):
    a = link(stub, "webshop", "x1", emails=["shared@example.org"], given_name="Tom").person
    b = link(stub, "app", "x2", emails=["shared@example.org"], given_name="Tom")
    assert b.person.name == a.name
    decision = stub.CreateLinkDecision(pb.CreateLinkDecisionRequest(decision=pb.LinkDecision(
        kind=pb.LinkDecision.KIND_CANNOT_LINK, account_a=ref("webshop", "x1"), account_b=ref("app", "x2"),
        reason="different people")))
    assert decision.author == "dev"
    after = link(stub, "app", "x2", emails=["shared@example.org"], given_name="Tom")
    assert after.person.name != a.name
    explanation = stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("webshop", "x1"),
                                                           account_b=ref("app", "x2")))
    assert explanation.decision == pb.MATCH_DECISION_NON_MATCH
    assert explanation.manual_decision.kind == pb.LinkDecision.KIND_CANNOT_LINK
    assert "shared_email" in explanation.rules


def test_unknown_and_bad_references(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("webshop", "nope"), account_b=ref("", "")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"account_b.source", "account_b.external_id"}
    with pytest.raises(grpc.RpcError) as err:
        stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("webshop", "nope"), account_b=ref("a", "b")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.MergePersons(pb.MergePersonsRequest(names=["persons/only-one"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_training_relinks_and_explains_with_a_waterfall_respecting_cannot_link(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModel(pb.GetModelRequest())
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    truth: dict[str, str] = {}
    batch = []
    for accounts, person, _trap in generate(300, seed=5):
        for raw in accounts:
            truth[f"{raw['source']}:{raw['id']}"] = person
            batch.append(pb.LinkAccountRequest(account=_raw_to_input(raw)))
    responses = [r for resp in stub.BatchLinkAccounts(iter([pb.BatchLinkAccountsRequest(requests=batch[i:i + 200])
                                                            for i in range(0, len(batch), 200)]))
                 for r in resp.responses]
    assert len(responses) == len(batch)
    # Two accounts of one synthetic person, kept apart by a manual decision before training.
    by_person: dict[str, list[str]] = {}
    for key, person in truth.items():
        by_person.setdefault(person, []).append(key)
    pair = next(keys for keys in by_person.values() if len(keys) >= 2)
    (sa, ea), (sb, eb) = (k.split(":", 1) for k in pair[:2])
    stub.CreateLinkDecision(pb.CreateLinkDecisionRequest(decision=pb.LinkDecision(
        kind=pb.LinkDecision.KIND_CANNOT_LINK, account_a=ref(sa, ea), account_b=ref(sb, eb))))
    model = stub.TrainModel(pb.TrainModelRequest(seed=7))
    assert model.training_records == len(batch)
    assert stub.GetModel(pb.GetModelRequest()).version == model.version
    person_a = stub.LookupPerson(pb.LookupPersonRequest(subject=subject_pb2.Subject(account=ref(sa, ea))))
    person_b = stub.LookupPerson(pb.LookupPersonRequest(subject=subject_pb2.Subject(account=ref(sb, eb))))
    assert person_a.name != person_b.name  # the manual decision survived the bulk re-run
    explanation = stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref(sa, ea), account_b=ref(sb, eb)))
    assert explanation.model_version == model.version
    assert {c.comparison for c in explanation.contributions} >= {"given_name", "family_name", "birth_date"}
    total = explanation.prior_match_weight + sum(c.match_weight for c in explanation.contributions)
    assert explanation.match_weight == pytest.approx(total)


def test_list_accounts_pages_and_rejects_foreign_tokens(stub):
    person = None
    for i in range(3):
        person = link(stub, "webshop", f"pg{i}", emails=["paula.page@example.org"], given_name="Paula").person
    first = stub.ListAccounts(pb.ListAccountsRequest(parent=person.name, page_size=2))
    second = stub.ListAccounts(pb.ListAccountsRequest(parent=person.name, page_size=2,
                                                      page_token=first.next_page_token))
    assert len(first.accounts) == 2
    assert len(second.accounts) == 1
    assert not second.next_page_token
    assert {a.ref.external_id for a in [*first.accounts, *second.accounts]} == {"pg0", "pg1", "pg2"}
    other = link(stub, "webshop", "pg-other", given_name="Otto").person
    with pytest.raises(grpc.RpcError) as err:
        stub.ListAccounts(pb.ListAccountsRequest(parent=other.name, page_token=first.next_page_token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"page_token"}


def test_batch_resolve_follows_merges_and_reports_every_reference(stub):
    a = link(stub, "webshop", "r1", emails=["rita.roth@example.org"], phones=["030 7788990"], given_name="Rita")
    b = link(stub, "newsletter", "r2", emails=["Rita.Roth@example.org"])
    c = link(stub, "app", "r3", given_name="Rita", family_name="Roth", birth_date="1975-05-05")
    assert b.person.name == a.person.name
    assert c.person.name != a.person.name
    merged = stub.MergePersons(pb.MergePersonsRequest(names=[a.person.name, c.person.name], reason="call centre"))
    neighbour = link(stub, "loyalty", "r4", phones=["030 7788990"], given_name="Rolf", family_name="Roth",
                     birth_date="1950-01-01")
    assert neighbour.person.name != merged.name  # a family sharing the landline: two persons hold it
    subjects = [
        subject_pb2.Subject(person=c.person.name),  # merged away: resolves to the survivor
        subject_pb2.Subject(account=ref("newsletter", "r2")),
        subject_pb2.Subject(identifier=subject_pb2.Identifier(kind=EMAIL, value=" RITA.ROTH@example.org ")),
        subject_pb2.Subject(identifier=subject_pb2.Identifier(kind=PHONE, value="+49 30 7788990")),
        subject_pb2.Subject(account=ref("webshop", "nobody")),
        subject_pb2.Subject(person="persons/0000000000000000"),
    ]
    out = stub.BatchResolveSubjects(pb.BatchResolveSubjectsRequest(subjects=subjects)).resolutions
    resolved = pb.SubjectResolution.STATE_RESOLVED
    assert [r.state for r in out] == [resolved, resolved, resolved, pb.SubjectResolution.STATE_AMBIGUOUS,
                                      pb.SubjectResolution.STATE_NOT_FOUND, pb.SubjectResolution.STATE_NOT_FOUND]
    assert merged.name == a.person.name
    assert {r.person.name for r in out[:3]} == {merged.name}
    assert out[0].person.account_count == 3
    assert c.person.name in out[0].person.merged_persons
    assert out[0].person == stub.GetPerson(pb.GetPersonRequest(name=merged.name))  # every field, times too
    assert out[0].person.create_time.ToMilliseconds() > 0
    accounts = stub.ListAccounts(pb.ListAccountsRequest(parent=merged.name)).accounts
    by_token = {acc.name.rsplit("/", 1)[1]: acc.link_method for acc in accounts}
    for resolution in out[:3]:
        refs = {(x.kind, x.token): x.link_method for x in resolution.references}
        assert {t: m for (k, t), m in refs.items() if k == pb.LinkedReference.KIND_ACCOUNT} == by_token
        identifiers = [m for (k, _t), m in refs.items() if k == pb.LinkedReference.KIND_IDENTIFIER]
        assert len(identifiers) == 2  # the e-mail (in two spellings, one token) and the landline
    assert pb.LINK_METHOD_MANUAL in by_token.values()
    assert not out[3].HasField("person")
    assert not out[3].references
    assert not out[4].references


def test_batch_resolve_rejects_bad_subjects_and_oversized_batches(stub):
    bad = [subject_pb2.Subject(account=ref("webshop", "x")),
           subject_pb2.Subject(identifier=subject_pb2.Identifier(kind=EMAIL, value="not an address"))]
    with pytest.raises(grpc.RpcError) as err:
        stub.BatchResolveSubjects(pb.BatchResolveSubjectsRequest(subjects=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"subjects[1].identifier.value"}
    many = [subject_pb2.Subject(account=ref("webshop", str(i))) for i in range(1001)]
    with pytest.raises(grpc.RpcError) as err:
        stub.BatchResolveSubjects(pb.BatchResolveSubjectsRequest(subjects=many))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"subjects"}


def test_realtime_link_scores_candidates_with_the_model(stub):
    """With a model, a new account without shared identifiers joins the person whose account has
    the same name, birth date and address (probabilistic link), and a stranger does not."""
    batch, people = [], []
    for accounts, _person, _trap in generate(300, seed=9):
        batch.extend(pb.LinkAccountRequest(account=_raw_to_input(raw)) for raw in accounts)
        people.append(accounts[0])
    list(stub.BatchLinkAccounts(iter([pb.BatchLinkAccountsRequest(requests=batch[i:i + 200])
                                      for i in range(0, len(batch), 200)])))
    stub.TrainModel(pb.TrainModelRequest(seed=3))
    raw = next(r for r in people if r.get("given_name") and r.get("family_name") and r.get("birth_date")
               and (r.get("address") or {}).get("postcode") and (r.get("address") or {}).get("street"))
    twin = {k: v for k, v in raw.items() if k in ("given_name", "family_name", "birth_date", "address")}
    known = stub.LookupPerson(pb.LookupPersonRequest(subject=subject_pb2.Subject(
        account=ref(raw["source"], str(raw["id"])))))
    linked = stub.LinkAccount(pb.LinkAccountRequest(account=_raw_to_input({**twin, "source": "app", "id": "rt-1"})))
    assert linked.account.link_method == pb.LINK_METHOD_PROBABILISTIC
    assert linked.person.name == known.name
    assert linked.account.link_probability >= 0.95
    stranger = stub.LinkAccount(pb.LinkAccountRequest(account=_raw_to_input(
        {"source": "app", "id": "rt-2", "given_name": "Xaver", "family_name": "Quastenflosser",
         "birth_date": "1901-01-01"})))
    assert stranger.created_person
    assert stranger.account.link_method == pb.LINK_METHOD_NEW_PERSON


def test_review_queue_lists_pairs_by_their_account_refs(stack, stub):
    link(stub, "webshop", 'W "1" \\ ä', given_name="Anna", family_name="Berg", birth_date="1990-01-01")
    link(stub, "loyalty", "L-1", given_name="Anna", family_name="Berk")
    runtime = stack.runtimes["identity"]
    store = IdentityStore(runtime.graph)
    a = runtime.blind_index.account_token("webshop", 'W "1" \\ ä')
    b = runtime.blind_index.account_token("loyalty", "L-1")
    store.put_review([{"id": pair_id(a, b), "a": a, "b": b, "probability": 0.8}], now=1_800_000_000_000)
    items = stub.ListReviewItems(pb.ListReviewItemsRequest(page_size=10)).items
    shown = [{(i.account_a.source, i.account_a.external_id), (i.account_b.source, i.account_b.external_id)}
             for i in items]
    assert shown == [{("webshop", 'W "1" \\ ä'), ("loyalty", "L-1")}]
    assert items[0].match_probability == pytest.approx(0.8)


def test_jan_and_jana_on_one_landline_stay_two_people_once_the_model_knows_both_names(stub):
    """Without a model, "jan" may be a shortened "jana" (a prefix): the landline links them. A
    model trained on accounts where both are common names knows better."""
    population = [pb.LinkAccountRequest(account=_raw_to_input(raw))
                  for accounts, _p, _t in generate(300, seed=8) for raw in accounts]
    population += [pb.LinkAccountRequest(account=_raw_to_input(
        {"source": "webshop", "id": f"name-{i}", "given_name": "Jan" if i % 2 else "Jana",
         "family_name": f"Nachname{i}", "emails": [f"kunde{i}@example.org"]})) for i in range(40)]
    for _ in stub.BatchLinkAccounts(iter([pb.BatchLinkAccountsRequest(requests=population[i:i + 200])
                                          for i in range(0, len(population), 200)])):
        pass
    stub.TrainModel(pb.TrainModelRequest(seed=3))
    home = {"phones": ["040 5566778"], "family_name": "Schulze",
            "address": {"street": "Kirchstraße 109", "postcode": "20095", "city": "Hamburg", "country": "DE"}}
    jan = stub.LinkAccount(pb.LinkAccountRequest(account=_raw_to_input(
        {"source": "loyalty", "id": "fam-jan", "given_name": "Jan", **home})))
    jana = stub.LinkAccount(pb.LinkAccountRequest(account=_raw_to_input(
        {"source": "loyalty", "id": "fam-jana", "given_name": "Jana", **home})))
    assert jana.person.name != jan.person.name
    explained = stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("loyalty", "fam-jan"),
                                                         account_b=ref("loyalty", "fam-jana")))
    assert not explained.same_person
    assert "guard:conflicting_given_name" in explained.rules


def test_erasure_removes_the_person_its_keys_decisions_and_review_items(stub, graph):
    from services.common.graph.statements import cypher

    eva = link(stub, "webshop", "er1", emails=["eva.erase@example.org"], given_name="Eva").person
    link(stub, "app", "er2", emails=["eva.erase@example.org"], given_name="Eva")
    other = link(stub, "webshop", "er3", emails=["ida.keep@example.org"], given_name="Ida").person
    link(stub, "app", "er4", emails=["ida.keep@example.org"], given_name="Ida")
    stub.CreateLinkDecision(pb.CreateLinkDecisionRequest(decision=pb.LinkDecision(
        kind=pb.LinkDecision.KIND_CANNOT_LINK, account_a=ref("webshop", "er1"), account_b=ref("webshop", "er3"),
        reason="Eva Erase is Ida's sister, born 1990")))
    # A cannot-link inside Eva's person splits it: the split's change event carries the reason too.
    stub.CreateLinkDecision(pb.CreateLinkDecisionRequest(decision=pb.LinkDecision(
        kind=pb.LinkDecision.KIND_CANNOT_LINK, account_a=ref("webshop", "er1"), account_b=ref("app", "er2"),
        reason="Eva's old phone, given to her son")))
    accounts = cypher("test.accounts_of", "MATCH (a:Account)-[:BELONGS_TO]->(:Person {id: $p}) RETURN a.id AS id")
    eva_accounts = sorted(r["id"] for r in graph.run(accounts, {"p": eva.name.removeprefix("persons/")}))
    ida_accounts = sorted(r["id"] for r in graph.run(accounts, {"p": other.name.removeprefix("persons/")}))
    store = IdentityStore(graph)
    store.put_review([{"id": pair_id(eva_accounts[0], ida_accounts[0]), "a": eva_accounts[0], "b": ida_accounts[0],
                       "probability": 0.8},
                      {"id": pair_id(*ida_accounts), "a": ida_accounts[0], "b": ida_accounts[1], "probability": 0.7}],
                     1)
    keys = cypher("test.keys", "MATCH (k:SubjectKey) WHERE k.subject IN $s RETURN k.subject AS s")
    assert len(graph.run(keys, {"s": [f"account:{a}" for a in eva_accounts]})) == len(eva_accounts) == 1

    stub.DeletePerson(pb.DeletePersonRequest(name=eva.name))

    with pytest.raises(grpc.RpcError) as err:
        stub.GetPerson(pb.GetPersonRequest(name=eva.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert graph.run(keys, {"s": [f"account:{a}" for a in eva_accounts]}) == []
    notes = cypher("test.notes", "MATCH (n) WHERE n:Decision OR n:ReviewPair RETURN n.a AS a, n.b AS b")
    left = graph.run(notes, {})
    assert all(row["a"] not in eva_accounts and row["b"] not in eva_accounts for row in left)
    assert {(row["a"], row["b"]) for row in left} == {tuple(ida_accounts)}  # the other person's review item stays
    assert stub.GetPerson(pb.GetPersonRequest(name=other.name)).account_count == 2
    changes = cypher("test.changes", "MATCH (e:PersonChange) RETURN e.kind AS kind, e.reason AS reason, "
                                     "e.accounts AS accounts, e.person AS person")
    for change in graph.run(changes, {}):
        assert "Eva" not in (change["reason"] or "")
        if change["person"] == eva.name.removeprefix("persons/"):
            assert change["accounts"] == []


def test_must_link_merges_unless_a_cannot_link_forbids_it_and_then_records_nothing(stub):
    def decide(kind, a, b, reason=""):
        return stub.CreateLinkDecision(pb.CreateLinkDecisionRequest(decision=pb.LinkDecision(
            kind=kind, account_a=a, account_b=b, reason=reason)))

    kai = link(stub, "webshop", "ml1", given_name="Kai", birth_date="1970-01-01").person
    link(stub, "loyalty", "ml2", given_name="Kai", birth_date="1970-01-01")
    decide(pb.LinkDecision.KIND_MUST_LINK, ref("webshop", "ml1"), ref("loyalty", "ml2"), "same card holder")
    assert stub.GetPerson(pb.GetPersonRequest(name=kai.name)).account_count == 2
    # Cannot-link on one person splits it, under the caller's name.
    link(stub, "app", "ml3", given_name="Kai", birth_date="1970-01-01")
    decide(pb.LinkDecision.KIND_MUST_LINK, ref("webshop", "ml1"), ref("app", "ml3"))
    decide(pb.LinkDecision.KIND_CANNOT_LINK, ref("webshop", "ml1"), ref("app", "ml3"), "two people")
    apart = stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("webshop", "ml1"), account_b=ref("app", "ml3")))
    assert (apart.manual_decision.kind, apart.manual_decision.author) == (pb.LinkDecision.KIND_CANNOT_LINK, "dev")
    app_person = stub.LookupPerson(pb.LookupPersonRequest(subject=subject_pb2.Subject(account=ref("app", "ml3"))))
    assert app_person.name != kai.name
    # A must-link across that cannot-link is refused, and leaves no must-link behind.
    with pytest.raises(grpc.RpcError) as err:
        decide(pb.LinkDecision.KIND_MUST_LINK, ref("loyalty", "ml2"), ref("app", "ml3"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(err.value)[0] == "CANNOT_LINK"
    between = stub.ExplainMatch(pb.ExplainMatchRequest(account_a=ref("loyalty", "ml2"), account_b=ref("app", "ml3")))
    assert between.manual_decision.kind != pb.LinkDecision.KIND_MUST_LINK
    assert stub.LookupPerson(pb.LookupPersonRequest(subject=subject_pb2.Subject(
        account=ref("app", "ml3")))).name == app_person.name


def test_a_split_retried_after_its_person_was_merged_returns_the_split(stub):
    older = link(stub, "webshop", "rm0", given_name="Rita", birth_date="1960-06-06").person
    rita = link(stub, "webshop", "rm1", emails=["rita.retry@example.org"], given_name="Rita",
                birth_date="1960-06-06").person
    link(stub, "app", "rm2", emails=["rita.retry@example.org"], given_name="Rita", birth_date="1960-06-06")
    request = pb.SplitPersonRequest(name=rita.name, accounts=[ref("app", "rm2")], request_id="split-then-merge")
    split = stub.SplitPerson(request)
    stub.MergePersons(pb.MergePersonsRequest(names=[older.name, rita.name]))  # rita's id now redirects
    again = stub.SplitPerson(request)  # the first reply was lost, say
    assert again.split_off.name == split.split_off.name
    assert again.remaining.name == older.name
