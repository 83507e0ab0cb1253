"""The container image, verified without a Docker engine: the Dockerfile's shape, and the same
stub generation and wheel build its builder stage runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    steps = instructions()
    assert 'PYTHON_IMAGE=python:3.11-slim' in [rest for word, rest in steps if word == "ARG"]
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]


def test_final_stage_runs_unprivileged_and_read_only_friendly() -> None:
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users == ["10001:10001"]
    env = " ".join(rest for word, rest in stage if word == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "TESSERA_HOME=/tmp/tessera", "TESSERA_SERVER_HOST=0.0.0.0"):
        assert setting in env
    assert json.loads(next(rest for word, rest in stage if word == "ENTRYPOINT")) == ["tessera"]
    assert json.loads(next(rest for word, rest in stage if word == "CMD")) == ["serve", "identity"]
    copies = [rest for word, rest in stage if word == "COPY"]
    assert copies == ["--from=builder /opt/tessera /opt/tessera"], "only the built virtualenv enters the image"
    runs = " ".join(rest for word, rest in stage if word == "RUN")
    for build_step in ("apt-get", "pip install"):
        assert build_step not in runs


def test_dockerignore_admits_only_build_inputs() -> None:
    lines = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[0] == "**"
    admitted = {x[1:].split("/")[0] for x in lines if x.startswith("!")}
    assert admitted == {"pyproject.toml", "constraints.txt", "README.md", "protos", "services"}
    copied = {rest.split()[0].rstrip("/") for word, rest in instructions()
              if word == "COPY" and not rest.startswith("--from")}
    assert copied <= admitted


def test_builder_steps_produce_a_wheel_with_services_and_stubs(tmp_path: Path) -> None:
    """Mirrors the builder stage: protoc over protos/ with googleapis-common-protos on the include
    path, then a wheel of the project, which must carry the services, the stubs and `tessera`."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "protos", src / "protos")
    shutil.copytree(ROOT / "services", src / "services", ignore=shutil.ignore_patterns("__pycache__"))
    import google.rpc.status_pb2 as status

    include = Path(status.__file__).parents[2]
    protos = sorted(str(p.relative_to(src / "protos")) for p in (src / "protos").rglob("*.proto"))
    (src / "gen" / "tessera").mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"-I{include}", "--python_out=../gen",
         "--pyi_out=../gen", "--grpc_python_out=../gen", *protos],
        cwd=src / "protos", check=True, capture_output=True, timeout=120,
    )
    for d in [src / "gen" / "tessera", *(p for p in (src / "gen" / "tessera").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheel = next(out.glob("tessera-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for svc in ("identity", "consent", "profile", "common"):
        assert f"services/{svc}/__init__.py" in names
    assert "services/common/cli.py" in names
    for svc in ("identity", "consent", "profile"):
        assert f"tessera/{svc}/v1/{svc}_pb2.py" in names
        assert f"tessera/{svc}/v1/{svc}_pb2_grpc.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "tessera = services.common.cli:main" in text
