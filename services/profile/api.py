"""ProfileService servicer: protos in, domain calls, protos out."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from tessera.profile.v1 import profile_pb2 as pb
from tessera.profile.v1 import profile_pb2_grpc

from services.common import protos
from services.common.errors import InvalidArgument, NotFound
from services.common.unimplemented import not_yet
from services.profile.service import ProfileService, ResolvedPerson

PROFILE_NAME = re.compile(r"^persons/([A-Za-z0-9_-]{1,64})/profile$")
MAX_EVENTS_PER_MESSAGE = 1000


def _struct(data: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, service: ProfileService):
        self.service = service

    def GetProfile(self, request: pb.GetProfileRequest, context: grpc.ServicerContext) -> pb.Profile:
        raise not_yet("GetProfile", "purpose-filtered profile assembly is not built yet")

    def BatchGetProfiles(self, request: pb.BatchGetProfilesRequest, context: grpc.ServicerContext
                         ) -> pb.BatchGetProfilesResponse:
        raise not_yet("BatchGetProfiles", "purpose-filtered profile assembly is not built yet")

    def UpsertTraits(self, request: pb.UpsertTraitsRequest, context: grpc.ServicerContext) -> pb.TraitSet:
        subject = protos.parse_subject(request.subject)
        traits = json_format.MessageToDict(request.traits)
        person_id, merged, now = self.service.upsert_traits(subject, traits, request.source)
        return pb.TraitSet(name=f"persons/{person_id}/traits", traits=_struct(merged),
                           update_time=protos.timestamp(now))

    def RecordEvents(self, request_iterator: Iterator[pb.RecordEventsRequest], context: grpc.ServicerContext
                     ) -> pb.RecordEventsResponse:
        accepted = duplicates = 0
        rejected: list[pb.RejectedEvent] = []
        for message in request_iterator:
            if len(message.events) > MAX_EVENTS_PER_MESSAGE:
                raise InvalidArgument.single("events", f"at most {MAX_EVENTS_PER_MESSAGE} events per message")
            batch = []
            for i, e in enumerate(message.events):
                if not e.HasField("event_time"):
                    rejected.append(pb.RejectedEvent(event_id=e.event_id, reason=f"events[{i}].event_time is required"))
                    continue
                try:
                    subject = protos.parse_subject(e.subject, f"events[{i}].subject")
                except InvalidArgument as exc:
                    rejected.append(pb.RejectedEvent(event_id=e.event_id, reason=exc.message))
                    continue
                batch.append({"id": e.event_id, "type": e.type, "subject": subject,
                              "at": protos.millis(e.event_time), "channel": e.channel,
                              "properties": json_format.MessageToDict(e.properties)})
            a, d, r = self.service.record_events(batch)
            accepted += a
            duplicates += d
            rejected.extend(pb.RejectedEvent(event_id=i, reason=why) for i, why in r)
        return pb.RecordEventsResponse(accepted_count=accepted, duplicate_count=duplicates, rejected=rejected)

    def _person(self, person_id: str) -> ResolvedPerson:
        return self.service.resolve(protos.SubjectRef(person_id=person_id))

    def ExportProfile(self, request: pb.ExportProfileRequest, context: grpc.ServicerContext
                      ) -> pb.ExportProfileResponse:
        person_id = protos.parse_person_name(request.person, "person")
        return pb.ExportProfileResponse(data=_struct(self.service.export(self._person(person_id))))

    def DeleteProfile(self, request: pb.DeleteProfileRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        m = PROFILE_NAME.match(request.name)
        if not m:
            raise InvalidArgument.single("name", "must be 'persons/{person}/profile'")
        try:
            person = self._person(m.group(1))
        except NotFound:
            person = ResolvedPerson(m.group(1), ())  # already erased in identity: delete what is left
        self.service.delete(person)
        return empty_pb2.Empty()
