"""Configuration: built-in defaults < YAML file (`TESSERA_CONFIG`) < environment variables.

Every setting has one environment name, `TESSERA_<SECTION>_<KEY>` (for example
`TESSERA_GRAPH_URI`, `TESSERA_SERVER_PORT`); `TESSERA_HOME` and `TESSERA_CONFIG` stand alone.
Settings are validated once at start-up and every problem is reported together, so a bad
deployment fails with a message naming each wrong setting instead of failing later at runtime.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlparse

import yaml

SERVICES = ("identity", "consent", "profile")
DEFAULT_PORTS = {"identity": 50051, "consent": 50052, "profile": 50053}
GRAPH_SCHEMES = {"falkordb", "redis", "neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"}


class ConfigError(ValueError):
    """Raised with every invalid setting listed, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 0  # 0: the service's default port
    health_port: int = 0  # separate plaintext health-only port (for kubelet probes under mTLS); 0: off
    max_workers: int = 16
    grace_seconds: float = 10.0
    default_deadline_seconds: float = 30.0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""


@dataclass
class GraphSettings:
    uri: str = "falkordb://127.0.0.1:6379"
    database: str = "tessera"
    user: str = ""
    password: str = ""
    password_file: str = ""
    max_retries: int = 3
    timeout_seconds: float = 10.0
    pool_size: int = 32


@dataclass
class CryptoSettings:
    kek_file: str = ""  # 32 random bytes, base64; generated under $TESSERA_HOME/keys in dev
    blind_index_key_file: str = ""
    signing_key_file: str = ""  # consent receipts (Ed25519 PEM)


@dataclass
class AuthSettings:
    mode: str = "dev"  # dev: caller from `x-tessera-caller` metadata; mtls: from client certificate
    policy_file: str = ""  # YAML: {callers: {name: {purposes: [...]}}}
    dev_default_caller: str = "dev"


@dataclass
class TelemetrySettings:
    otlp_endpoint: str = ""  # empty: no export
    metrics_port: int = 0  # Prometheus scrape port; 0: off
    service_namespace: str = "tessera"


@dataclass
class LogSettings:
    level: str = "info"
    format: str = "json"  # json | console


@dataclass
class ClientsSettings:
    identity_addr: str = "127.0.0.1:50051"
    consent_addr: str = "127.0.0.1:50052"
    profile_addr: str = "127.0.0.1:50053"
    timeout_seconds: float = 5.0


@dataclass
class IdentitySettings:
    default_region: str = "DE"
    link_threshold: float = 0.95
    review_threshold: float = 0.6
    max_persons_per_identifier: int = 5
    max_accounts_per_identifier: int = 10
    max_identifiers_per_person: str = "email=10,phone=6,social=10,login=10,loyalty=5"
    candidate_limit: int = 200
    model_dir: str = ""  # default: $TESSERA_HOME/models


@dataclass
class ConsentSettings:
    catalogue_file: str = ""  # default: the shipped catalogue
    grant_propagation: str = "deterministic,verified,manual"


@dataclass
class Settings:
    home: str = "./.tessera"
    server: ServerSettings = field(default_factory=ServerSettings)
    graph: GraphSettings = field(default_factory=GraphSettings)
    crypto: CryptoSettings = field(default_factory=CryptoSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    log: LogSettings = field(default_factory=LogSettings)
    clients: ClientsSettings = field(default_factory=ClientsSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    consent: ConsentSettings = field(default_factory=ConsentSettings)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    def port_for(self, service: str) -> int:
        return self.server.port or DEFAULT_PORTS[service]

    def graph_password(self) -> str:
        if self.graph.password_file:
            return Path(self.graph.password_file).read_text().strip()
        return self.graph.password

    def replace(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some section values changed (tests and the local launcher use this)."""
        updated = dataclasses.replace(self)
        for name, values in sections.items():
            if name == "home":
                updated.home = str(values)
                continue
            setattr(updated, name, dataclasses.replace(getattr(self, name), **values))
        return updated


def _coerce(value: Any, kind: type, where: str, problems: list[str]) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(str(value).strip())
        if kind is float:
            return float(str(value).strip())
        return "" if value is None else str(value)
    except ValueError:
        problems.append(f"{where}: expected {kind.__name__}, got {value!r}")
        return None


def load_settings(env: dict[str, str] | None = None, config_file: str | None = None) -> Settings:
    """Builds validated settings from defaults, the config file and the environment."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    settings = Settings()
    path = config_file or env.get("TESSERA_CONFIG", "")
    file_values: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([f"TESSERA_CONFIG={path}: cannot read: {exc}"]) from exc
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: top level must be a mapping"])
        file_values = loaded
    if "home" in file_values:
        settings.home = str(file_values.pop("home"))
    if "TESSERA_HOME" in env:
        settings.home = env["TESSERA_HOME"]
    section_types = get_type_hints(Settings)
    for name, values in file_values.items():
        if name not in section_types or name == "home":
            problems.append(f"{path}: unknown section {name!r}")
        elif not isinstance(values, dict):
            problems.append(f"{path}: section {name!r} must be a mapping")
    for sec_field in fields(Settings):
        if sec_field.name == "home":
            continue
        section = getattr(settings, sec_field.name)
        hints = get_type_hints(type(section))
        given = file_values.get(sec_field.name) or {}
        if isinstance(given, dict):
            for key in given:
                if key not in hints:
                    problems.append(f"{path}: unknown setting {sec_field.name}.{key}")
        for key, kind in hints.items():
            env_name = f"TESSERA_{sec_field.name}_{key}".upper()
            if env_name in env:
                raw, where = env[env_name], env_name
            elif isinstance(given, dict) and key in given:
                raw, where = given[key], f"{path}: {sec_field.name}.{key}"
            else:
                continue
            value = _coerce(raw, kind, where, problems)
            if value is not None:
                setattr(section, key, value)
    problems.extend(validate(settings))
    if problems:
        raise ConfigError(problems)
    return settings


def validate(s: Settings) -> list[str]:
    """Returns every problem with the settings; empty when they are usable."""
    problems: list[str] = []
    if not 0 <= s.server.port <= 65535:
        problems.append(f"server.port (TESSERA_SERVER_PORT): {s.server.port} is not a port number")
    if not 0 <= s.server.health_port <= 65535:
        problems.append(f"server.health_port (TESSERA_SERVER_HEALTH_PORT): {s.server.health_port} out of range")
    if s.server.max_workers < 1:
        problems.append("server.max_workers (TESSERA_SERVER_MAX_WORKERS): must be at least 1")
    if s.server.default_deadline_seconds <= 0:
        problems.append("server.default_deadline_seconds: must be positive")
    scheme = urlparse(s.graph.uri).scheme
    if scheme not in GRAPH_SCHEMES:
        problems.append(
            f"graph.uri (TESSERA_GRAPH_URI): scheme {scheme!r} not supported; use one of {sorted(GRAPH_SCHEMES)}"
        )
    if not s.graph.database:
        problems.append("graph.database (TESSERA_GRAPH_DATABASE): must not be empty")
    if s.graph.max_retries < 0:
        problems.append("graph.max_retries: must not be negative")
    if s.graph.password_file and not Path(s.graph.password_file).is_file():
        problems.append(f"graph.password_file (TESSERA_GRAPH_PASSWORD_FILE): {s.graph.password_file} not found")
    if s.auth.mode not in {"dev", "mtls"}:
        problems.append(f"auth.mode (TESSERA_AUTH_MODE): {s.auth.mode!r} must be 'dev' or 'mtls'")
    if s.auth.mode == "mtls":
        for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            value = getattr(s.server, key)
            if not value or not Path(value).is_file():
                problems.append(f"server.{key} (TESSERA_SERVER_{key.upper()}): required file for auth.mode=mtls")
        if not s.crypto.kek_file:
            problems.append("crypto.kek_file (TESSERA_CRYPTO_KEK_FILE): required outside dev mode")
        if not s.crypto.blind_index_key_file:
            problems.append(
                "crypto.blind_index_key_file (TESSERA_CRYPTO_BLIND_INDEX_KEY_FILE): required outside dev mode")
    for key in ("kek_file", "blind_index_key_file", "signing_key_file"):
        value = getattr(s.crypto, key)
        if value and not Path(value).is_file():
            problems.append(f"crypto.{key} (TESSERA_CRYPTO_{key.upper()}): {value} not found")
    if s.auth.policy_file and not Path(s.auth.policy_file).is_file():
        problems.append(f"auth.policy_file (TESSERA_AUTH_POLICY_FILE): {s.auth.policy_file} not found")
    if s.log.level.lower() not in {"debug", "info", "warning", "error"}:
        problems.append(f"log.level (TESSERA_LOG_LEVEL): {s.log.level!r} must be debug, info, warning or error")
    if s.log.format not in {"json", "console"}:
        problems.append(f"log.format (TESSERA_LOG_FORMAT): {s.log.format!r} must be json or console")
    if not 0 <= s.telemetry.metrics_port <= 65535:
        problems.append("telemetry.metrics_port (TESSERA_TELEMETRY_METRICS_PORT): out of range")
    if not 0 < s.identity.review_threshold <= s.identity.link_threshold < 1:
        problems.append("identity: need 0 < review_threshold <= link_threshold < 1")
    if s.identity.max_persons_per_identifier < 1:
        problems.append("identity.max_persons_per_identifier: must be at least 1")
    return problems
