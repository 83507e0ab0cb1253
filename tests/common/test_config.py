from __future__ import annotations

import pytest

from services.common.config import ConfigError, load_settings


def test_defaults_are_valid_and_local():
    s = load_settings(env={})
    assert s.graph.uri.startswith("falkordb://127.0.0.1")
    assert s.port_for("identity") == 50051
    assert s.port_for("consent") == 50052
    assert s.port_for("profile") == 50053
    assert s.auth.mode == "dev"


def test_environment_overrides_file_overrides_defaults(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("graph:\n  database: from_file\n  uri: neo4j://db:7687\nserver:\n  port: 6000\n")
    s = load_settings(env={"TESSERA_CONFIG": str(cfg), "TESSERA_SERVER_PORT": "7000"})
    assert s.graph.database == "from_file"
    assert s.graph.uri == "neo4j://db:7687"
    assert s.server.port == 7000


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("graph:\n  nonsense: 1\nunknown_section: {}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={"TESSERA_CONFIG": str(cfg), "TESSERA_SERVER_PORT": "http", "TESSERA_GRAPH_URI": "mysql://x",
                           "TESSERA_AUTH_MODE": "none"})
    text = str(err.value)
    for expected in ("graph.nonsense", "unknown_section", "TESSERA_SERVER_PORT", "TESSERA_GRAPH_URI",
                     "TESSERA_AUTH_MODE"):
        assert expected in text
    assert len(err.value.problems) == 5


def test_mtls_mode_requires_certificates_and_keys():
    with pytest.raises(ConfigError) as err:
        load_settings(env={"TESSERA_AUTH_MODE": "mtls"})
    problems = "\n".join(err.value.problems)
    assert "tls_cert_file" in problems
    assert "kek_file" in problems
    assert "blind_index_key_file" in problems


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(env={"TESSERA_CONFIG": str(tmp_path / "missing.yaml")})
