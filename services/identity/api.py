"""IdentityService servicer: protos in, domain calls, protos out. No Cypher, no business rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2
from tessera.identity.v1 import identity_pb2 as pb
from tessera.identity.v1 import identity_pb2_grpc
from tessera.type.v1 import subject_pb2

from services.common import client_ids, protos
from services.common.auth import current_caller
from services.common.errors import FieldViolation, InvalidArgument
from services.identity.bulk import BulkImport
from services.identity.service import (
    AMBIGUOUS,
    METHOD_DETERMINISTIC,
    METHOD_MANUAL,
    METHOD_NEW,
    METHOD_PROBABILISTIC,
    NOT_FOUND,
    RESOLVED,
    AccountView,
    IdentityService,
    LinkOutcome,
    PersonView,
)

LINK_METHODS = {METHOD_NEW: pb.LINK_METHOD_NEW_PERSON, METHOD_DETERMINISTIC: pb.LINK_METHOD_DETERMINISTIC,
                METHOD_PROBABILISTIC: pb.LINK_METHOD_PROBABILISTIC, METHOD_MANUAL: pb.LINK_METHOD_MANUAL}
RESOLUTION_STATES = {RESOLVED: pb.SubjectResolution.STATE_RESOLVED, NOT_FOUND: pb.SubjectResolution.STATE_NOT_FOUND,
                     AMBIGUOUS: pb.SubjectResolution.STATE_AMBIGUOUS}
RAW_LISTS = {"email": "emails", "phone": "phones", "login": "logins", "loyalty": "loyalty_cards"}
MAX_BATCH = 1000


def account_input_to_raw(account: pb.AccountInput, field: str) -> dict[str, Any]:
    """Proto → the bulk-import JSON contract (DESIGN.md §6), which the normaliser validates."""
    source, external_id = protos.parse_account_ref(account.ref, f"{field}.ref")
    raw: dict[str, Any] = {"source": source, "id": external_id}
    violations = []
    for i, ident in enumerate(account.identifiers):
        kind = protos.IDENTIFIER_KINDS.get(ident.kind)
        if kind is None:
            violations.append(FieldViolation(f"{field}.identifiers[{i}].kind", "must be a known identifier kind"))
            continue
        if kind == "social":
            provider, sep, handle = ident.value.partition(":")
            if not sep:
                violations.append(FieldViolation(f"{field}.identifiers[{i}].value",
                                                 "social identifiers are written provider:handle"))
                continue
            raw.setdefault("social", []).append({"provider": provider, "handle": handle})
        else:
            raw.setdefault(RAW_LISTS[kind], []).append(ident.value)
    if violations:
        raise InvalidArgument(violations)
    attrs = account.attributes
    for key in ("given_name", "family_name", "birth_date"):
        if getattr(attrs, key):
            raw[key] = getattr(attrs, key)
    if attrs.HasField("address"):
        raw["address"] = {k: getattr(attrs.address, k) for k in ("street", "postcode", "city", "region", "country")
                          if getattr(attrs.address, k)}
    return raw


def person_to_proto(view: PersonView) -> pb.Person:
    return fill_person(pb.Person(), view)


def fill_person(message: pb.Person, view: PersonView) -> pb.Person:
    """`view` written into `message` in place (a batch's answers fill their own, uncopied)."""
    message.name = f"persons/{view.person_id}"
    message.create_time.FromMilliseconds(int(view.created_at))
    message.update_time.FromMilliseconds(int(view.updated_at))
    message.account_count = view.account_count
    message.merged_persons.extend(f"persons/{p}" for p in view.merged_persons)
    return message


def account_to_proto(view: AccountView) -> pb.Account:
    attrs = view.attributes or {}
    address = attrs.get("address") or {}
    return pb.Account(
        name=f"persons/{view.person_id}/accounts/{view.account_id}",
        ref=subject_pb2.AccountRef(source=view.source, external_id=view.external_id),
        identifiers=[subject_pb2.Identifier(kind=protos.IDENTIFIER_ENUMS[i["kind"]], value=i["value"])
                     for i in view.identifiers],
        attributes=pb.Attributes(
            given_name=attrs.get("given_name") or "", family_name=attrs.get("family_name") or "",
            birth_date=attrs.get("birth_date") or "",
            address=pb.Address(**{k: str(address.get(k) or "") for k in
                                  ("street", "postcode", "city", "region", "country")}),
        ),
        link_method=LINK_METHODS.get(view.method, pb.LINK_METHOD_UNSPECIFIED),
        link_probability=view.probability,
        create_time=protos.timestamp(view.created_at), update_time=protos.timestamp(view.updated_at),
    )


PHASES = {"reading": pb.LinkStagedAccountsResponse.PHASE_READING,
          "training": pb.LinkStagedAccountsResponse.PHASE_TRAINING,
          "scoring": pb.LinkStagedAccountsResponse.PHASE_SCORING,
          "clustering": pb.LinkStagedAccountsResponse.PHASE_CLUSTERING,
          "writing": pb.LinkStagedAccountsResponse.PHASE_WRITING, "done": pb.LinkStagedAccountsResponse.PHASE_DONE}


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, service: IdentityService):
        self.service = service
        self.bulk = BulkImport(service)

    def _link_response(self, outcome: LinkOutcome) -> pb.LinkAccountResponse:
        return pb.LinkAccountResponse(
            person=person_to_proto(outcome.person or self.service.get_person(outcome.person_id)),
            account=pb.Account(name=f"persons/{outcome.person_id}/accounts/{outcome.account_id}",
                               link_method=LINK_METHODS.get(outcome.method, pb.LINK_METHOD_UNSPECIFIED),
                               link_probability=outcome.probability),
            created_person=outcome.created_person,
            problems=[pb.InputProblem(field=f"account.{f}", reason=r) for f, r in outcome.problems],
            merged_persons=[f"persons/{p}" for p in outcome.merged_persons],
        )

    def LinkAccount(self, request: pb.LinkAccountRequest, context: grpc.ServicerContext) -> pb.LinkAccountResponse:
        if not request.HasField("account"):
            raise InvalidArgument.single("account", "required")
        raw = account_input_to_raw(request.account, "account")
        return self._link_response(self.service.link(raw))

    def BatchLinkAccounts(self, request_iterator: Iterator[pb.BatchLinkAccountsRequest],
                          context: grpc.ServicerContext) -> Iterator[pb.BatchLinkAccountsResponse]:
        for batch in request_iterator:
            if len(batch.requests) > MAX_BATCH:
                raise InvalidArgument.single("requests", f"at most {MAX_BATCH} accounts per message")
            raws = [account_input_to_raw(r.account, f"requests[{i}].account") for i, r in enumerate(batch.requests)]
            yield pb.BatchLinkAccountsResponse(responses=[self._link_response(self.service.link(r)) for r in raws])

    def StageAccounts(self, request_iterator: Iterator[pb.StageAccountsRequest],
                      context: grpc.ServicerContext) -> Iterator[pb.StageAccountsResponse]:
        for batch in request_iterator:
            if len(batch.accounts) > MAX_BATCH:
                raise InvalidArgument.single("accounts", f"at most {MAX_BATCH} accounts per message")
            raws = [account_input_to_raw(a, f"accounts[{i}]") for i, a in enumerate(batch.accounts)]
            outcome = self.bulk.stage(raws)
            yield pb.StageAccountsResponse(
                staged=outcome.staged, already_staged=outcome.already_staged, relinked=outcome.relinked,
                problems=[pb.InputProblem(field=f"accounts[{i}].{f}", reason=r) for i, f, r in outcome.problems])

    def LinkStagedAccounts(self, request: pb.LinkStagedAccountsRequest,
                           context: grpc.ServicerContext) -> Iterator[pb.LinkStagedAccountsResponse]:
        for step in self.bulk.link_staged(seed=request.seed):
            yield pb.LinkStagedAccountsResponse(
                phase=PHASES[step.phase], done=step.done, total=step.total, linked_accounts=step.linked_accounts,
                created_persons=step.created_persons, merged_persons=step.merged_persons,
                model_version=step.model_version)

    def GetPerson(self, request: pb.GetPersonRequest, context: grpc.ServicerContext) -> pb.Person:
        return person_to_proto(self.service.get_person(protos.parse_person_name(request.name, "name")))

    def LookupPerson(self, request: pb.LookupPersonRequest, context: grpc.ServicerContext) -> pb.Person:
        ref = protos.parse_subject(request.subject)
        if ref.person_id:
            view = self.service.get_person(ref.person_id)
        elif ref.account:
            view = self.service.person_of_account(*ref.account)
        else:
            assert ref.identifier
            view = self.service.person_of_identifier(*ref.identifier)
        return person_to_proto(view)

    def BatchResolveSubjects(self, request: pb.BatchResolveSubjectsRequest,
                             context: grpc.ServicerContext) -> pb.BatchResolveSubjectsResponse:
        if len(request.subjects) > MAX_BATCH:
            raise InvalidArgument.single("subjects", f"at most {MAX_BATCH} subjects per request")
        refs = [protos.parse_subject(s, f"subjects[{i}]") for i, s in enumerate(request.subjects)]
        out = pb.BatchResolveSubjectsResponse()
        for res in self.service.resolve_subjects(refs):
            item = out.resolutions.add(state=RESOLUTION_STATES[res.state])
            if res.person is not None:
                fill_person(item.person, res.person)
            add = item.references.add  # filled in place: half the cost of building each and copying it
            for kind, held in ((pb.LinkedReference.KIND_ACCOUNT, res.accounts),
                               (pb.LinkedReference.KIND_IDENTIFIER, res.identifiers)):
                for token, method in sorted(held.items()):
                    add(kind=kind, token=token, link_method=LINK_METHODS.get(method, 0))
        return out

    def ListAccounts(self, request: pb.ListAccountsRequest, context: grpc.ServicerContext) -> pb.ListAccountsResponse:
        person_id = protos.parse_person_name(request.parent, "parent")
        views, token = protos.paginate(
            request.page_token, request.page_size, protos.fingerprint("ListAccounts", request.parent),
            lambda after, limit: self.service.list_accounts(person_id, after, limit), lambda v: v.account_id)
        return pb.ListAccountsResponse(accounts=[account_to_proto(v) for v in views], next_page_token=token)

    def MergePersons(self, request: pb.MergePersonsRequest, context: grpc.ServicerContext) -> pb.Person:
        if len(request.names) < 2:
            raise InvalidArgument.single("names", "name at least two persons to merge")
        ids = [protos.parse_person_name(n, f"names[{i}]") for i, n in enumerate(request.names)]
        return person_to_proto(self.service.merge(ids, request.reason))

    def SplitPerson(self, request: pb.SplitPersonRequest, context: grpc.ServicerContext) -> pb.SplitPersonResponse:
        person_id = protos.parse_person_name(request.name, "name")
        if not request.accounts:
            raise InvalidArgument.single("accounts", "name at least one account to split off")
        refs = [protos.parse_account_ref(a, f"accounts[{i}]") for i, a in enumerate(request.accounts)]
        request_id = client_ids.checked(request.request_id, "request_id")
        remaining, split_off = self.service.split(person_id, refs, request.reason, request_id)
        return pb.SplitPersonResponse(remaining=person_to_proto(remaining), split_off=person_to_proto(split_off))

    def ExplainMatch(self, request: pb.ExplainMatchRequest, context: grpc.ServicerContext) -> pb.MatchExplanation:
        a = protos.parse_account_ref(request.account_a, "account_a")
        b = protos.parse_account_ref(request.account_b, "account_b")
        result = self.service.explain(a, b)
        out = pb.MatchExplanation(same_person=result["same_person"], rules=result["rules"],
                                  model_version=result["model_version"])
        score = result["score"]
        if score is not None:
            out.match_probability = score.match_probability
            out.match_weight = score.match_weight
            out.prior_match_weight = score.prior_match_weight
            out.contributions.extend(
                pb.ComparisonContribution(comparison=c.comparison, level=c.level, match_weight=c.match_weight,
                                          tf_adjustment=c.tf_adjustment)
                for c in score.contributions)
        if result["decision"]:
            out.manual_decision.CopyFrom(self._decision_to_proto(result["decision"], a, b))
        if result["decision"]:
            out.decision = (pb.MATCH_DECISION_MATCH if result["decision"]["kind"] == "must_link"
                            else pb.MATCH_DECISION_NON_MATCH)
        elif result["same_person"]:
            out.decision = pb.MATCH_DECISION_MATCH
        elif score is not None and score.match_probability >= self.service.thresholds.review:
            out.decision = pb.MATCH_DECISION_REVIEW
        else:
            out.decision = pb.MATCH_DECISION_NON_MATCH
        return out

    @staticmethod
    def _decision_to_proto(row: dict[str, Any], a: tuple[str, str], b: tuple[str, str]) -> pb.LinkDecision:
        kind = pb.LinkDecision.KIND_MUST_LINK if row["kind"] == "must_link" else pb.LinkDecision.KIND_CANNOT_LINK
        return pb.LinkDecision(kind=kind, account_a=subject_pb2.AccountRef(source=a[0], external_id=a[1]),
                               account_b=subject_pb2.AccountRef(source=b[0], external_id=b[1]),
                               reason=row["reason"] or "", author=row["author"] or "",
                               create_time=protos.timestamp(row["at"]))

    def CreateLinkDecision(self, request: pb.CreateLinkDecisionRequest, context: grpc.ServicerContext
                           ) -> pb.LinkDecision:
        d = request.decision
        kinds = {pb.LinkDecision.KIND_MUST_LINK: "must_link", pb.LinkDecision.KIND_CANNOT_LINK: "cannot_link"}
        violations = []
        if d.kind not in kinds:
            violations.append(FieldViolation("decision.kind", "must be KIND_MUST_LINK or KIND_CANNOT_LINK"))
        try:
            a = protos.parse_account_ref(d.account_a, "decision.account_a")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        try:
            b = protos.parse_account_ref(d.account_b, "decision.account_b")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if violations:
            raise InvalidArgument(violations)
        row = self.service.decide(kinds[d.kind], a, b, d.reason, current_caller().name)
        return self._decision_to_proto(row, a, b)

    def ListReviewItems(self, request: pb.ListReviewItemsRequest, context: grpc.ServicerContext
                        ) -> pb.ListReviewItemsResponse:
        rows, token = protos.paginate(request.page_token, request.page_size, protos.fingerprint("ListReviewItems"),
                                      self.service.review_items, lambda r: r["id"])
        items = [pb.ReviewItem(account_a=subject_pb2.AccountRef(source=r["a"][0], external_id=r["a"][1]),
                               account_b=subject_pb2.AccountRef(source=r["b"][0], external_id=r["b"][1]),
                               match_probability=r["probability"], create_time=protos.timestamp(r["created_at"]))
                 for r in rows]
        return pb.ListReviewItemsResponse(items=items, next_page_token=token)

    def DeletePerson(self, request: pb.DeletePersonRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.service.delete_person(protos.parse_person_name(request.name, "name"))
        return empty_pb2.Empty()

    def WatchPersonChanges(self, request: pb.WatchPersonChangesRequest, context: grpc.ServicerContext
                           ) -> Iterator[pb.PersonChange]:
        if request.after_sequence < 0:
            raise InvalidArgument.single("after_sequence", "must not be negative")
        kinds = {"merged": pb.PersonChange.KIND_MERGED, "split": pb.PersonChange.KIND_SPLIT,
                 "deleted": pb.PersonChange.KIND_DELETED}
        for row in self.service.changes(request.after_sequence, 0.2, context.is_active):
            yield pb.PersonChange(
                sequence=int(row["seq"]), kind=kinds.get(row["kind"], pb.PersonChange.KIND_UNSPECIFIED),
                person=f"persons/{row['person']}", related_persons=[f"persons/{p}" for p in row["related"] or []],
                create_time=protos.timestamp(row["at"]))

    def TrainModel(self, request: pb.TrainModelRequest, context: grpc.ServicerContext) -> pb.Model:
        model, _merged = self.service.train_model(request.seed)
        return self._model(model)

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.Model:
        return self._model(self.service.current_model())

    def _model(self, model: Any) -> pb.Model:
        return pb.Model(version=model.version, train_time=protos.timestamp(model.trained_at_ms),
                        training_records=model.training_records, link_threshold=self.service.thresholds.link,
                        review_threshold=self.service.thresholds.review)
