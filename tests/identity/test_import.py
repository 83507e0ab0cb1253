"""`tessera identity import`: progress, bad lines, resume after a kill, final assignments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tessera.identity.v1 import identity_pb2 as pb
from tessera.identity.v1 import identity_pb2_grpc

from bench.synth import generate

ROOT = Path(__file__).resolve().parents[2]


def write_input(path: Path, persons: int) -> tuple[int, list[int]]:
    """Writes accounts with a few bad lines mixed in; returns (good accounts, bad line numbers)."""
    good, bad, line = 0, [], 0
    with path.open("w") as fh:
        for accounts, _person, _trap in generate(persons, seed=21):
            for acc in accounts:
                line += 1
                fh.write(json.dumps(acc, ensure_ascii=False) + "\n")
                good += 1
                if line % 97 == 0:
                    line += 1
                    fh.write(["{not json", "[1, 2]", '{"source": "webshop"}', '{"source": "x", "id": "1", '
                              '"emails": "not-a-list"}'][len(bad) % 4] + "\n")
                    bad.append(line)
    return good, bad


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.common.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_once_progress_is_saved(args: list[str], env: dict[str, str], home: Path) -> dict:
    """Starts an import, kills it (SIGKILL) as soon as it has saved progress; returns that progress."""
    first = run_cli(args, env)
    progress_files = home / "imports"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(progress_files.glob("*.progress.json")):
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)  # reaps it and closes its pipes
    return json.loads(next(progress_files.glob("*.progress.json")).read_text())


def test_import_reports_bad_lines_resumes_after_kill_and_writes_final_persons(stack_factory, tmp_path):
    stack = stack_factory("identity")
    data, out = tmp_path / "accounts.jsonl", tmp_path / "persons.jsonl"
    good, bad_lines = write_input(data, 900)
    env = {**os.environ, "TESSERA_HOME": str(tmp_path / "home"),
           "TESSERA_CLIENTS_IDENTITY_ADDR": f"127.0.0.1:{stack.ports['identity']}"}
    saved = kill_once_progress_is_saved(
        ["identity", "import", str(data), "--assignments", str(out), "--batch-size", "50"], env, tmp_path / "home")
    assert 0 < saved["offset"] < data.stat().st_size, "the import was not interrupted part-way"

    second = run_cli(["identity", "import", str(data), "--assignments", str(out), "--batch-size", "50"], env)
    _stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 3, stderr  # finished, with bad lines reported
    assert "resuming at line" in stderr
    assert "training the first one" in stderr  # an empty system trains its first model on the import
    for line in bad_lines:
        if line > saved["line"]:
            assert f"line {line}:" in stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == good
    assert len({(r["source"], r["id"]) for r in rows}) == good

    stub = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
    persons = {r["person_id"] for r in rows}
    total = 0
    for person in persons:
        found = stub.GetPerson(pb.GetPersonRequest(name=f"persons/{person}"))
        assert found.name == f"persons/{person}"  # final ids: no redirects left in the output
        total += found.account_count
    assert total == good  # every account exactly once, nothing duplicated by the resume
