from __future__ import annotations

import io
import json

import structlog

from services.common.logs import REDACTED, configure_logging, scrub_text


def test_unknown_keys_are_redacted_and_text_scrubbed():
    buf = io.StringIO()
    configure_logging("t", "info", "json", stream=buf)
    log = structlog.get_logger("x")
    log.info("linked anna.schmidt@example.org via +49 151 2345678 born 09.04.1988", given_name="Anna",
             person_id="p1", duration_ms=3.5)
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert line["given_name"] == REDACTED
    assert line["person_id"] == "p1"
    assert line["duration_ms"] == 3.5
    for secret in ("anna.schmidt", "2345678", "1988"):
        assert secret not in buf.getvalue()
    assert line["service"] == "t"


def test_stdlib_logging_goes_through_redaction():
    import logging

    buf = io.StringIO()
    configure_logging("t", "info", "json", stream=buf)
    logging.getLogger("grpc").warning("peer said hello from max@example.com")
    assert "max@example.com" not in buf.getvalue()
    assert "peer said hello" in buf.getvalue()


def test_scrub_keeps_ordinary_text():
    assert scrub_text("linked 3 accounts in 12 ms") == "linked 3 accounts in 12 ms"
