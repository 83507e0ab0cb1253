"""Wiring shared by every service process: logging, telemetry, graph client and key material."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.config import Settings
from services.common.crypto import BlindIndex, KeyEncryptionKey, load_or_create_key, read_key_file
from services.common.graph.factory import connect
from services.common.graph.port import GraphClient
from services.common.keystore import SubjectKeys
from services.common.logs import configure_logging
from services.common.telemetry import configure_telemetry


@dataclass
class Runtime:
    settings: Settings
    graph: GraphClient
    kek: KeyEncryptionKey
    blind_index: BlindIndex
    keys: SubjectKeys

    def close(self) -> None:
        self.graph.close()


def _key(configured: str, dev_path: Path) -> bytes:
    """Configured key files are required in the cluster (validated by config); development
    generates keys under $TESSERA_HOME/keys on first start."""
    return read_key_file(configured) if configured else load_or_create_key(dev_path)


def build_runtime(service: str, settings: Settings, *, configure_process: bool = True) -> Runtime:
    if configure_process:
        configure_logging(service, settings.log.level, settings.log.format)
        configure_telemetry(service, settings.telemetry)
    keys_dir = settings.home_path / "keys"
    kek = KeyEncryptionKey(_key(settings.crypto.kek_file, keys_dir / "kek"))
    blind = BlindIndex(_key(settings.crypto.blind_index_key_file, keys_dir / "blind-index"))
    graph = connect(settings.graph, settings.graph_password())
    return Runtime(settings=settings, graph=graph, kek=kek, blind_index=blind,
                   keys=SubjectKeys(graph, kek))
