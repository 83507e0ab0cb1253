"""Caller identity and the purposes each caller may use.

In the cluster the caller is the client certificate's identity (mTLS: first DNS SAN, else the
common name). In development mode it comes from the `x-tessera-caller` metadata header. A policy
file maps callers to purposes; without one (development only) every caller may use every purpose.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.errors import PermissionDenied, Unauthenticated

CALLER_HEADER = "x-tessera-caller"
ANY_PURPOSE = "*"

_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("tessera_caller", default=None)


@dataclass(frozen=True)
class Caller:
    name: str
    purposes: frozenset[str]

    def may_use(self, purpose_id: str) -> bool:
        return ANY_PURPOSE in self.purposes or purpose_id in self.purposes

    def require_purpose(self, purpose_id: str) -> None:
        if not self.may_use(purpose_id):
            raise PermissionDenied(
                f"caller {self.name!r} may not use purpose {purpose_id!r}",
                reason="PURPOSE_NOT_ALLOWED_FOR_CALLER",
                metadata={"caller": self.name, "purpose": purpose_id},
            )


@dataclass(frozen=True)
class CallerPolicy:
    callers: dict[str, frozenset[str]]
    allow_unknown: bool

    @classmethod
    def load(cls, path: str, *, dev_mode: bool) -> CallerPolicy:
        if not path:
            return cls(callers={}, allow_unknown=dev_mode)
        data = yaml.safe_load(Path(path).read_text()) or {}
        callers = {
            str(name): frozenset(str(p) for p in (spec or {}).get("purposes", []))
            for name, spec in (data.get("callers") or {}).items()
        }
        return cls(callers=callers, allow_unknown=False)

    def resolve(self, name: str) -> Caller:
        if name in self.callers:
            return Caller(name, self.callers[name])
        if self.allow_unknown:
            return Caller(name, frozenset({ANY_PURPOSE}))
        raise PermissionDenied(f"caller {name!r} is not known to the policy", reason="UNKNOWN_CALLER",
                               metadata={"caller": name})


def caller_name_from_context(context: Any, *, mode: str, dev_default: str) -> str:
    if mode == "mtls":
        auth = context.auth_context() or {}
        for key in ("x509_subject_alternative_name", "x509_common_name"):
            values = auth.get(key) or []
            if values:
                return values[0].decode() if isinstance(values[0], bytes) else str(values[0])
        raise Unauthenticated("a client certificate is required", reason="CLIENT_CERTIFICATE_REQUIRED")
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_HEADER and value:
            return str(value)
    return dev_default


def set_current_caller(caller: Caller | None) -> contextvars.Token:
    return _current.set(caller)


def reset_current_caller(token: contextvars.Token) -> None:
    _current.reset(token)


def current_caller() -> Caller:
    caller = _current.get()
    if caller is None:
        raise Unauthenticated("no caller identity", reason="NO_CALLER")
    return caller
