"""A clear UNIMPLEMENTED answer for RPCs whose logic belongs to a later issue: never a fake one."""

from __future__ import annotations

from services.common.errors import Unimplemented


def not_yet(rpc: str, what: str) -> Unimplemented:
    return Unimplemented(f"{rpc} is not implemented yet: {what}", reason="NOT_IMPLEMENTED_YET",
                         metadata={"rpc": rpc})
