#!/usr/bin/env python3
"""Idempotent developer setup: venv, Python deps, generated stubs, npm Cypher linter, helm/kubectl.

Runs with the system Python (stdlib only). Each step keeps a stamp of its inputs under
`.venv/.stamps/`, so a second run with nothing changed finishes in well under a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMPS = VENV / ".stamps"
GEN = ROOT / "gen"
THIRD_PARTY = ROOT / "build" / "third_party_protos"
LINT_DIR = ROOT / "tools" / "cypher-lint"


def log(msg: str) -> None:
    print(f"[setup] {msg}", flush=True)


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for base in paths:
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for f in files:
            if "node_modules" in f.parts or "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def step(name: str, key: str, action) -> None:
    stamp = STAMPS / name
    if stamp.exists() and stamp.read_text() == key:
        return
    log(f"{name} …")
    action()
    STAMPS.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)


def run(*cmd: str | Path, cwd: Path = ROOT) -> None:
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def make_venv() -> None:
    if not PY.exists():
        log("creating .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)


def install_python() -> None:
    init = GEN / "tessera" / "__init__.py"
    init.parent.mkdir(parents=True, exist_ok=True)
    init.touch()
    run(PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", ROOT / "constraints.txt", "-e", ".[dev]")


def generate_stubs() -> None:
    import_paths = _third_party_protos()
    if (GEN / "tessera").exists():
        shutil.rmtree(GEN / "tessera")
    (GEN / "tessera").mkdir(parents=True)
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    run(
        PY, "-m", "grpc_tools.protoc", "-Iprotos", f"-I{import_paths}",
        f"--python_out={GEN}", f"--pyi_out={GEN}", f"--grpc_python_out={GEN}", *protos,
    )
    for d in [GEN / "tessera", *[p for p in (GEN / "tessera").rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()


def _third_party_protos() -> Path:
    """Copy google/api and google/rpc protos out of googleapis-common-protos (the Buf registry is
    unreachable here), so protoc and buf see them as an include-only module."""
    out = subprocess.run(
        [PY, "-c", "import google.rpc.status_pb2 as m, os; print(os.path.dirname(os.path.dirname(m.__file__)))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    src = Path(out)
    for pkg in ("api", "rpc", "type"):
        dst = THIRD_PARTY / "google" / pkg
        dst.mkdir(parents=True, exist_ok=True)
        for proto in (src / pkg).glob("*.proto"):
            shutil.copy2(proto, dst / proto.name)
    return THIRD_PARTY


def install_cypher_linter() -> None:
    run("npm", "install", "--no-audit", "--no-fund", "--silent", cwd=LINT_DIR)


def install_k8s_tools() -> None:
    run(PY, ROOT / "scripts" / "fetch_k8s_tools.py", "--dest", VENV / "bin")


def main() -> int:
    make_venv()
    step("python", digest(ROOT / "pyproject.toml", ROOT / "constraints.txt"), install_python)
    step("stubs", digest(ROOT / "protos", ROOT / "scripts" / "setup.py"), generate_stubs)
    if not (LINT_DIR / "node_modules").exists():
        (STAMPS / "cypher-lint").unlink(missing_ok=True)
    step("cypher-lint", digest(LINT_DIR / "package.json"), install_cypher_linter)
    if (ROOT / "scripts" / "fetch_k8s_tools.py").exists():
        step("k8s-tools", digest(ROOT / "scripts" / "fetch_k8s_tools.py"), install_k8s_tools)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
