"""The guides in docs/ cannot drift: every block in them is an excerpt of a file checked here, a
shell block executed here, or a block of commands checked line by line; the Dockerfile, the
compose file, the Kubernetes manifests and the workflow are parsed and their secret wiring
checked; the configuration table covers every ``KEYGUARD_*`` name in the code; the
troubleshooting table mirrors every error code. Docker, kubectl and GitHub are not available
here, so what needs them is parsed and checked, never run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyguard.client.errors import ADVICE
from keyguard.core.errors import ErrorCode
from keyguard.management import KeyManager
from tests.test_readme import _check_pip_line, _shell_env, is_excerpt

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DEPLOY = DOCS / "deploy"
GUIDES = sorted(DOCS.glob("*.md"))

_MARKER = re.compile(r"<!--\s*(?P<kind>from|run|check):\s*(?P<name>\S+)\s*-->")
_FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


@dataclass(frozen=True)
class Block:
    guide: str
    line: int
    text: str
    kind: str | None
    name: str | None


def guide_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]) is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        mark = _MARKER.search(lines[start - 1]) if start else None
        found.append(
            Block(
                path.name,
                start + 1,
                "\n".join(body),
                mark.group("kind") if mark else None,
                mark.group("name") if mark else None,
            )
        )
        i += 1
    return found


BLOCKS = [b for guide in GUIDES for b in guide_blocks(guide)]


def block(kind: str, name: str) -> Block:
    (found,) = [b for b in BLOCKS if b.kind == kind and b.name == name]
    return found


#: Files the guides quote, and the test here that checks or runs each.
EXCERPT_SOURCES = {
    "docs/deploy/Dockerfile": "test_dockerfile_keeps_secrets_out_of_the_image",
    "docs/deploy/compose.yaml": "test_compose_wires_redis_and_the_pepper_secret",
    "docs/deploy/kubernetes.yaml": "test_kubernetes_manifests",
    "docs/deploy/kubernetes-secrets.sh": "test_kubernetes_manifests",
    "docs/deploy/github-actions.yml": "test_github_workflow_gives_the_secret_to_one_step_only",
    "examples/client/call_api.py": "test_the_client_example_calls_the_demo",
    "examples/client/requests_session.py": "test_the_requests_example_creates_an_agent",
    "docs/deploy/pre-commit-config.yaml": "test_pre_commit_hook_scans_staged_files",
    "docs/deploy/scan-workflow.yml": "test_scan_workflow_scans_the_whole_history",
    "docs/deploy/alert_receiver.py": "test_alert_receiver_example_revokes_a_leaked_key",
    "examples/dashboard/fastapi_app.py": "test_the_dashboard_examples_serve_the_dashboard",
    "examples/dashboard/flask_app.py": "test_the_dashboard_examples_serve_the_dashboard",
    "keyguard/dashboard/usage.py": "test_the_documented_usage_protocol",
    "examples/detectors/setup.py": "test_the_detectors_example_suspends_after_wrong_secrets",
    "examples/observability/app.py": "test_the_observability_example_counts_and_reports",
    "keyguard/observability/model.py": "test_the_observability_example_counts_and_reports",
    "docs/deploy/webhook_receiver.py": "test_webhook_receiver_example_checks_signatures",
    "docs/deploy/keyguard-notify.cron": "test_notify_cron_line_parses",
}
#: ``<!-- run: NAME -->`` blocks and the test that executes each.
RUNNERS = {
    "rotation": "test_rotation_runbook_runs",
    "troubleshooting": "test_troubleshooting_commands_run",
    "scanning": "test_scanning_runbook_runs",
}
#: ``<!-- check: NAME -->`` blocks (tools not available here) and the test checking each line.
CHECKERS = {
    "docker": "test_docker_commands_name_the_compose_services",
    "kubectl": "test_kubectl_rotation_commands",
    "token-regex": "test_documented_token_regex",
    "usage-json": "test_documented_usage_file",
    "mutation-commands": "test_mutation_commands",
    "mutation-exclusions": "test_mutation_exclusions_parse",
}


def test_there_are_guides_and_blocks() -> None:
    names = {g.name for g in GUIDES}
    assert {
        "configuration.md",
        "client.md",
        "docker.md",
        "kubernetes.md",
        "github-actions.md",
        "rotation.md",
        "troubleshooting.md",
        "scanning.md",
    } <= names
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("blk", BLOCKS, ids=lambda b: f"{b.guide}:{b.line}")
def test_every_block_is_an_excerpt_or_is_run_or_checked(blk: Block) -> None:
    where = f"docs/{blk.guide}:{blk.line}"
    assert blk.kind is not None, f"{where}: announce it with <!-- from|run|check: ... -->"
    assert blk.name is not None
    table = {"from": EXCERPT_SOURCES, "run": RUNNERS, "check": CHECKERS}[blk.kind]
    assert blk.name in table, f"{where}: no test for {blk.name!r}"
    assert table[blk.name] in globals(), table[blk.name]
    if blk.kind == "from":
        source = ROOT / blk.name
        assert source.is_file(), where
        assert is_excerpt(blk.text, source.read_text(encoding="utf-8")), (
            f"{where}: not an excerpt of {blk.name}"
        )


_LINK = re.compile(r"\]\((?!https?:|#)(?P<target>[^)#]+)")


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_relative_links_resolve(guide: Path) -> None:
    for m in _LINK.finditer(guide.read_text(encoding="utf-8")):
        assert (guide.parent / m.group("target")).exists(), (guide.name, m.group("target"))


# -- configuration -----------------------------------------------------------------------------
_NAME = re.compile(r"\bKEYGUARD_[A-Z0-9_]*[A-Z0-9]\b")


def test_every_keyguard_variable_in_the_code_is_documented() -> None:
    in_code = set()
    for path in (ROOT / "keyguard").rglob("*.py"):
        in_code |= set(_NAME.findall(path.read_text(encoding="utf-8")))
    table = (DOCS / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(KEYGUARD_[A-Z0-9_]+)` \|", table, re.MULTILINE))
    # The prefix of a group ("KEYGUARD_RATELIMIT_*") is not a variable.
    missing = {n for n in in_code if n not in documented and f"`{n}_*`" not in table}
    missing -= {"KEYGUARD_RATELIMIT"} if "KEYGUARD_RATELIMIT_*" in table else set()
    assert not missing, f"add to docs/configuration.md: {sorted(missing)}"
    for name in documented:
        if name.endswith("_FILE"):
            assert name.removesuffix("_FILE") in documented, name


# -- Docker --------------------------------------------------------------------------------------
_SECRET_WORDS = re.compile(r"PEPPER|API_KEY|SECRET|TOKEN|PASSWORD|PASSWD", re.IGNORECASE)
_KEYLIKE = re.compile(r"[a-z][a-z0-9]{0,15}_[0-9A-Za-z]{12}_[0-9A-Za-z]{16,}")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        instruction, _, args = pending.partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    return out


def test_dockerfile_keeps_secrets_out_of_the_image() -> None:
    steps = dockerfile_instructions((DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM"
    for kind, args in steps:
        if kind in ("ARG", "ENV", "LABEL"):
            names = [part.split("=", 1)[0] for part in shlex.split(args)]
            for name in names:
                assert not _SECRET_WORDS.search(name), f"{kind} {name}: a secret in the image"
        assert not _KEYLIKE.search(args), f"{kind}: a key in the image"
        assert "--build-arg" not in args
    assert ("USER", "keyguard") in steps, "the service must not run as root"
    user_at = kinds.index("USER")
    assert kinds.index("CMD") > user_at
    assert any(k == "HEALTHCHECK" and "/health" in a for k, a in steps)
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[:2] == ["keyguard", "demo"]
    assert "--host" in cmd
    copied = [a.split()[0] for k, a in steps if k == "COPY"] + [
        a.split()[1] for k, a in steps if k == "COPY" and len(a.split()) > 2
    ]
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "keyguard"):
        assert name in copied or any(name in a for k, a in steps if k == "COPY")
        assert (ROOT / name).exists(), name
    install = next(a for k, a in steps if k == "RUN" and "pip install" in a)
    extras = re.search(r'"\.\[([a-z,]+)\]"', install)
    assert extras is not None
    _check_pip_line(f'pip install ".[{extras.group(1)}]"')


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_compose_wires_redis_and_the_pepper_secret() -> None:
    compose = load_compose()
    services = compose["services"]
    assert set(services) == {"keyguard", "redis"}
    service = services["keyguard"]
    build = service["build"]
    assert "args" not in build, "no build arguments: secrets are runtime inputs"
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    env = service["environment"]
    assert env["KEYGUARD_STORE_URL"] == "redis://redis:6379/0"
    assert env["KEYGUARD_RATELIMIT_URL"].startswith("redis://redis:6379/")
    for name, value in env.items():
        if _SECRET_WORDS.search(name):
            assert name.endswith("_FILE"), f"{name}: secrets go in files, not values"
            secret = value.removeprefix("/run/secrets/")
            assert value.startswith("/run/secrets/")
            assert secret in service["secrets"]
            assert "file" in compose["secrets"][secret]
    assert not _KEYLIKE.search((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert services["redis"]["image"].startswith("redis:")
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    for secret in compose["secrets"].values():
        assert Path(secret["file"]).parts[0] + "/" in ignored, "the secret file is committed"


def test_docker_commands_name_the_compose_services() -> None:
    services = set(load_compose()["services"])
    lines = [x for x in block("check", "docker").text.splitlines() if x.strip()]
    assert any(line.startswith("docker compose") for line in lines)
    for line in lines:
        words = shlex.split(line)
        assert "--build-arg" not in words
        if words[0] != "docker":
            continue
        assert words[:4] == ["docker", "compose", "-f", "docs/deploy/compose.yaml"]
        assert (ROOT / words[3]).is_file()
        if words[4] in ("exec", "logs"):
            assert words[5] in services, line
        if words[4] == "exec":
            assert words[6] == "keyguard"  # the CLI, inside the container
            assert not any(_KEYLIKE.search(w) for w in words)
    mkdir, pepper = lines[0], lines[1]
    assert mkdir == "mkdir -p docs/deploy/secrets"
    assert pepper.endswith("> docs/deploy/secrets/keyguard_pepper")
    secret_file = load_compose()["secrets"]["keyguard_pepper"]["file"]
    assert (DEPLOY / secret_file).resolve() == (ROOT / "docs/deploy/secrets/keyguard_pepper")


# -- Kubernetes --------------------------------------------------------------------------------
def manifests() -> list[dict[str, Any]]:
    text = (DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d]


def _by(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _created_secrets() -> dict[str, set[str]]:
    """Secret name → keys, as the kubectl commands in the guides create them."""
    found: dict[str, set[str]] = {}
    text = (DEPLOY / "kubernetes-secrets.sh").read_text(encoding="utf-8")
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:4] == ["kubectl", "create", "secret", "generic"]:
            keys = {w.split("=", 1)[1].split("=")[0] for w in words if w.startswith("--from-file=")}
            found[words[4]] = keys
    return found


def test_kubernetes_manifests() -> None:
    docs = manifests()
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert doc["kind"] != "Secret", "secrets are created with kubectl, not committed"
    text = (DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8")
    assert not _KEYLIKE.search(text)
    config = _by("ConfigMap", "keyguard")["data"]
    assert config["KEYGUARD_STORE_URL"] == "redis://redis:6379/0"
    assert config["KEYGUARD_RATELIMIT_URL"].startswith("redis://redis:6379/")
    created = _created_secrets()
    api = _by("Deployment", "keyguard")
    spec = api["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["port"] == container["ports"][0]["containerPort"]
    assert container["command"][:3] == ["uvicorn", "keyguard.demo:create_app", "--factory"]
    for deployment in [d for d in docs if d["kind"] in ("Deployment", "Job")]:
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            env = {e["name"]: e for e in c.get("env", [])}
            from_config = any("configMapRef" in s for s in c.get("envFrom", []))
            values = dict(config) if from_config else {}
            values.update({k: e.get("value") for k, e in env.items()})
            for name, value in values.items():
                if not _SECRET_WORDS.search(name):
                    continue
                assert name.endswith("_FILE"), f"{name}: secrets as files, not values"
                directory, _, key = str(value).rpartition("/")
                mount = mounts[directory]
                assert mount["readOnly"] is True
                secret = volumes[mount["name"]]["secret"]["secretName"]
                assert secret in created, f"no kubectl command creates {secret}"
                assert key in created[secret], f"{secret} has no key {key}"
    assert _by("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    assert _by("Job", "keyguard-init")["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "keyguard",
        "init",
    ]


def test_kubectl_rotation_commands() -> None:
    created = _created_secrets()
    lines = [x for x in block("check", "kubectl").text.splitlines() if x.strip()]
    deployments = {d["metadata"]["name"] for d in manifests() if d["kind"] == "Deployment"}
    rotate = [x for x in lines if "keyguard keys rotate" in x]
    assert len(rotate) == 1
    assert "--grace" in rotate[0]
    assert "--quiet" in rotate[0]
    for line in lines:
        words = shlex.split(line)
        assert not any(_KEYLIKE.search(w) for w in words)
        if words[:4] == ["kubectl", "create", "secret", "generic"]:
            assert words[4] in created
            assert "--dry-run=client" in words  # an update of the existing Secret
        if words[:2] == ["kubectl", "rollout"]:
            assert words[3].removeprefix("deployment/") in deployments
        if words[:2] == ["kubectl", "exec"]:
            assert words[2].removeprefix("deploy/") in deployments


# -- GitHub Actions ----------------------------------------------------------------------------
def test_github_workflow_gives_the_secret_to_one_step_only() -> None:
    text = (DEPLOY / "github-actions.yml").read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert "env" not in job, "the secret belongs to one step"
    assert "env" not in workflow, "the secret belongs to one step"
    holders = [s for s in job["steps"] if "secrets." in json.dumps(s)]
    assert len(holders) == 1
    (step,) = holders
    assert step["env"]["KEYGUARD_API_KEY"] == "${{ secrets.KEYGUARD_API_KEY }}"
    for s in job["steps"]:
        run = s.get("run", "")
        assert "secrets." not in run
        assert "KEYGUARD_API_KEY" not in run, "the key stays off command lines"
        if run.startswith("pip install"):
            _check_pip_line(run)
    module = step["run"].removeprefix("python -m ")
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert module == "examples.client.call_api"  # run for real below


# -- examples ------------------------------------------------------------------------------------
@pytest.fixture
def served_demo() -> Iterator[tuple[str, dict[str, str]]]:
    from keyguard.core.hashing import Hasher
    from keyguard.demo import create_app
    from keyguard.stores.memory import MemoryStore
    from tests.client.conftest import Served, demo_keys

    store = MemoryStore()
    keys = demo_keys(store, time.time())
    with Served(create_app(store=store, hasher=Hasher(pepper_from_env=False))) as served:
        yield served.base, keys


def _example(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_the_client_example_calls_the_demo(
    served_demo: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, keys = served_demo
    ok = _example(
        "examples.client.call_api", {"KEYGUARD_API_KEY": keys["reader"], "API_BASE_URL": base}
    )
    assert ok.returncode == 0, ok.stderr
    assert "agents:" in ok.stdout
    key_file = tmp_path / "key"
    key_file.write_text(keys["revoked"] + "\n")
    refused = _example(
        "examples.client.call_api", {"KEYGUARD_API_KEY_FILE": str(key_file), "API_BASE_URL": base}
    )
    assert refused.returncode == 1
    assert "revoked_api_key" in refused.stderr
    typo = keys["reader"][:-1] + ("A" if keys["reader"][-1] != "A" else "B")
    bad = _example("examples.client.call_api", {"KEYGUARD_API_KEY": typo, "API_BASE_URL": base})
    assert bad.returncode == 2
    assert "(checksum)" in bad.stderr
    assert typo not in bad.stderr


def test_the_requests_example_creates_an_agent(
    served_demo: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.client import requests_session

    base, keys = served_demo
    monkeypatch.setenv("KEYGUARD_API_KEY", keys["admin"])
    monkeypatch.delenv("KEYGUARD_API_KEY_FILE", raising=False)
    monkeypatch.setenv("API_BASE_URL", base)
    created = requests_session.create_agent("triage-bot-2")
    assert created["name"] == "triage-bot-2"


# -- the runbooks, run for real --------------------------------------------------------------------
def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_rotation_runbook_runs(tmp_path: Path) -> None:
    script = block("run", "rotation").text
    result = _bash(script + '\nprintf "KEY_ID=%s\\n" "$KEY_ID"', tmp_path, _shell_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    key_id = out.rsplit("KEY_ID=", 1)[1].strip()
    assert f"{key_id} billing-worker ok" in out  # just created: not due
    assert "previous secret: accepted until" in out  # step 2: the old secret, in its grace
    assert "matches the key's current secret" in out  # step 3: the new one
    assert "old secret" in out  # keys show: the grace deadline
    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    with KeyManager(url) as keys:
        record = keys.get(key_id)
        assert record.rotated_at is not None
        assert record.previous_expires_at is not None
        assert 6.9 * 86400 < record.previous_expires_at - record.rotated_at <= 7 * 86400
        assert [e.action for e in keys.audit(key_id=key_id)] == ["rotate", "create"]
    assert not _KEYLIKE.search(out + result.stderr), "the runbook printed a key"


@pytest.mark.slow
def test_troubleshooting_commands_run(tmp_path: Path) -> None:
    from keyguard.core.hashing import Hasher
    from keyguard.demo import create_app
    from tests.client.conftest import Served

    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as keys:
        key = keys.create("reader", ["agents:read"]).plaintext
    app = create_app(store=url, hasher=Hasher(pepper_from_env=False))
    with Served(app) as served:
        outputs = []
        for line in block("run", "troubleshooting").text.splitlines():
            command = line.split("  #", 1)[0].replace("http://127.0.0.1:8000", served.base)
            env = {**_shell_env(tmp_path), "KEYGUARD_STORE_URL": url, "KEY": key}
            result = subprocess.run(
                ["bash", "-uo", "pipefail", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode in (0, 1), result.stderr
            assert "Traceback" not in result.stderr
            assert key not in result.stdout + result.stderr
            outputs.append((result.returncode, result.stdout))
    (ok, store), (refused, scope), (remote_refused, remote), (remote_ok, data) = outputs
    assert ok == 0
    assert "verdict  accepted" in store
    assert refused == 1
    assert "POST /agents needs agents:write" in scope
    assert remote_refused == 1
    assert "insufficient_scope" in remote
    assert remote_ok == 0
    assert json.loads(data)["accepted"] is True


# -- troubleshooting mirrors the error codes -------------------------------------------------------
def test_troubleshooting_lists_every_code_with_the_clients_advice() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3} \|.*)$", text, re.MULTILINE))
    assert set(rows) == set(ADVICE)
    assert {c.value for c in ErrorCode} <= set(rows), "a code is missing from the table"
    for code, advice in ADVICE.items():
        assert rows[code] == f"{advice.status} | {advice.meaning} | {advice.action} |", code


# -- leaked keys: scan, review, alerts (docs/scanning.md) ------------------------------------------
def _git_identity(env: dict[str, str]) -> dict[str, str]:
    return {
        **{k: v for k, v in env.items() if not k.startswith("GIT_")},
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Docs",
        "GIT_AUTHOR_EMAIL": "docs@example.com",
        "GIT_COMMITTER_NAME": "Docs",
        "GIT_COMMITTER_EMAIL": "docs@example.com",
    }


@pytest.mark.slow
def test_scanning_runbook_runs(tmp_path: Path) -> None:
    script = block("run", "scanning").text
    env = _git_identity(_shell_env(tmp_path))
    result = _bash(script + '\nprintf "KEY_ID=%s\\n" "$KEY_ID"', tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    key_id = out.rsplit("KEY_ID=", 1)[1].strip()
    assert "no key in the files" in out
    assert "exit status 1: found in the history" in out
    assert f"(key id {key_id})" in out
    assert f"key {key_id} (" in out
    assert "): revoked" in out
    assert "found by keyguard scan at" in out  # keys show: the reason
    findings = json.loads((tmp_path / "project" / "findings.json").read_text())["findings"]
    assert [(f["path"], f["line"], f["key_id"]) for f in findings] == [(".env", 1, key_id)]
    assert not _KEYLIKE.search(out + result.stderr), "the runbook printed a key"
    with KeyManager(f"sqlite:///{tmp_path / 'keyguard.db'}") as keys:
        assert keys.get(key_id).revoked_at is not None


def test_pre_commit_hook_scans_staged_files(tmp_path: Path) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    config = yaml.safe_load((DEPLOY / "pre-commit-config.yaml").read_text(encoding="utf-8"))
    (repo,) = config["repos"]
    ids = [h["id"] for h in repo["hooks"]]
    (hook,) = [h for h in hooks if h["id"] in ids]
    assert hook["id"] == "keyguard-scan"
    assert hook["language"] == "python"
    assert hook.get("pass_filenames", True) is True
    entry = shlex.split(hook["entry"])
    assert entry[0] == "keyguard"  # the console script pyproject.toml installs
    # As pre-commit runs it: the entry, then the staged files.
    from keyguard.core.keys import generate_key

    (tmp_path / "settings.py").write_text(f"KEY = '{generate_key().plaintext}'\n")
    (tmp_path / "clean.py").write_text("KEY = os.environ['KEY']\n")
    cli = [sys.executable, "-m", "keyguard.management.cli", *entry[1:]]
    env = _shell_env(tmp_path)
    dirty = subprocess.run(
        [*cli, "clean.py", "settings.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    clean = subprocess.run(
        [*cli, "clean.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (dirty.returncode, clean.returncode) == (1, 0), dirty.stderr + clean.stderr
    assert "settings.py:1:" in dirty.stdout


def test_scan_workflow_scans_the_whole_history() -> None:
    text = (DEPLOY / "scan-workflow.yml").read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    assert workflow["permissions"] == {"contents": "read"}
    assert "secrets." not in text, "scanning needs no secret"
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s["run"] for s in steps if "run" in s]
    assert runs[-1] == "keyguard scan --git ."
    assert any("pip install" in r and "keyguard" in r for r in runs[:-1])


def test_alert_receiver_example_revokes_a_leaked_key() -> None:
    import importlib.util

    from keyguard.core.hashing import Hasher
    from keyguard.stores.memory import MemoryStore
    from tests.abuse.alert_support import KeyServer, Signer

    spec = importlib.util.spec_from_file_location("alert_receiver", DEPLOY / "alert_receiver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store = MemoryStore()
    hasher = Hasher(pepper_from_env=False)
    with KeyManager(store, hasher=hasher) as keys:
        leaked = keys.create("ci", ["agents:read"])
    signer = Signer("docs-key")
    with KeyServer(signer) as server:
        app = module.create_app(store, keys_url=server.url, hasher=hasher)
        statuses = asyncio.run(_exercise_receiver(app, leaked.plaintext, signer))
    assert statuses == [(200, None), (200, "true_positive"), (401, "revoked_api_key"), (401, None)]


async def _exercise_receiver(app: Any, plaintext: str, signer: Any) -> list[tuple[int, Any]]:
    import httpx

    out: list[tuple[int, Any]] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        auth = {"Authorization": f"UserKey {plaintext}"}
        out.append(((await client.get("/agents", headers=auth)).status_code, None))
        body = json.dumps(
            [{"token": plaintext, "type": "kg", "url": "https://x", "source": "commit"}]
        ).encode()
        answer = await client.post("/security/leaks", content=body, headers=signer.headers(body))
        out.append((answer.status_code, answer.json()[0]["label"]))
        refused = await client.get("/agents", headers=auth)
        out.append((refused.status_code, refused.json()["code"]))
        unsigned = await client.post("/security/leaks", content=body)
        out.append((unsigned.status_code, None))
    return out


def test_documented_token_regex() -> None:
    from keyguard.abuse.matching import KEY_REGEX
    from keyguard.core.keys import CHECKSUM_LENGTH, MAX_SECRET_LENGTH, MIN_SECRET_LENGTH

    documented = block("check", "token-regex").text.strip()
    assert documented == KEY_REGEX
    low, high = re.search(r"\{(\d+),(\d+)\}$", documented).groups()  # type: ignore[union-attr]
    assert (int(low), int(high)) == (
        MIN_SECRET_LENGTH + CHECKSUM_LENGTH,
        MAX_SECRET_LENGTH + CHECKSUM_LENGTH,
    )


def test_documented_usage_file() -> None:
    from keyguard.abuse.usage import load_usage

    source = load_usage(block("check", "usage-json").text)
    assert source.scope_usage("3F9aQ2xLm7Pw", source.since) == {
        "agents:read": 1200,
        "tasks:read": 3,
    }


# -- mutation testing (docs/mutation.md): the commands exist, the exclusions parse ------------
def test_mutation_commands() -> None:
    """The documented commands name the script and real modules; ``--list`` runs for real (the
    runs themselves take half an hour, so they are not part of the suite)."""
    root = DOCS.parent
    listed = subprocess.run(
        [sys.executable, str(root / "scripts" / "mutation.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )
    assert listed.returncode == 0, listed.stderr
    modules = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"keys", "hashing", "scopes", "policy", "verifier", "authority"} <= modules
    for line in block("check", "mutation-commands").text.splitlines():
        command = line.removeprefix("$ ").split("#", 1)[0].split()
        if command[:2] == ["pip", "install"]:
            assert "[mutation]" in command[-1]
            continue
        assert command[0] == "scripts/mutation"
        args = [a for a in command[1:] if not a.startswith("--")]
        assert set(args) <= modules, args


def test_mutation_exclusions_parse() -> None:
    import tomllib

    data = tomllib.loads(block("check", "mutation-exclusions").text)
    entries = data["exclude"]
    assert entries
    for entry in entries:
        assert {"module", "function", "kind", "why"} <= set(entry), entry
        assert {"before", "after"} & set(entry), entry  # what the mutant changes
        assert entry["kind"] in ("equivalent", "message-only")


# -- the dashboard --------------------------------------------------------------------------------
@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_the_dashboard_examples_serve_the_dashboard(framework: str, tmp_path: Path) -> None:
    """docs/dashboard.md's examples: an admin key signs in, creates a key, and the key's
    requests to the protected route are charted."""
    import importlib
    import re

    import httpx

    from keyguard.core.hashing import Hasher
    from tests.api.support import SyncASGITransport

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as manager:
        admin = manager.create("ops", ["admin"]).plaintext
    module = importlib.import_module(f"examples.dashboard.{framework}_app")
    app = module.create_app(url, secret="docs-test-secret-0123456789abcdefgh")
    transport = (
        SyncASGITransport(app) if framework == "fastapi" else httpx.WSGITransport(app=app.wsgi_app)
    )
    token = re.compile(r'name="(csrf_token|request_id)" value="([^"]+)"')
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        form = dict(token.findall(client.get("/keyguard/sign-in").text))
        signed = client.post("/keyguard/sign-in", data={**form, "key": admin})
        assert signed.status_code == 303, signed.text
        form = dict(token.findall(client.get("/keyguard/keys/new").text))
        fields = {**form, "name": "x", "scopes": "agents:read"}
        made = client.post("/keyguard/keys/new", data=fields)
        found = re.search(r'id="new-key" class="mono" value="([^"]+)"', made.text)
        assert found is not None, made.text
        key = found.group(1)
        auth = {"Authorization": f"UserKey {key}"}
        assert client.get("/agents").status_code == 401
        assert [client.get("/agents", headers=auth).status_code for _ in range(3)] == [200] * 3
        page = client.get(f"/keyguard/keys/{key.split('_')[1]}").text
        assert 'data-total="2xx">3<' in page
        assert 'data-route-count="GET /agents">3<' in page


def test_the_documented_usage_protocol() -> None:
    from keyguard.dashboard import MemoryUsage, UsageSource

    documented = block("from", "keyguard/dashboard/usage.py").text
    assert "def daily_usage(" in documented
    assert "def top_routes(" in documented
    assert isinstance(MemoryUsage(), UsageSource)


# -- anomaly detectors (docs/detectors.md) -------------------------------------------------------
def test_the_detectors_example_suspends_after_wrong_secrets(tmp_path: Path) -> None:
    from examples.detectors.setup import build
    from keyguard.core.hashing import Hasher
    from keyguard.core.records import KeyStatus
    from keyguard.observability.model import Event, EventKind

    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as keys:
        key_id = keys.create("ci", ["agents:read"], owner="acme").record.key_id
    events: list[Event] = []
    processes = [build(url, events.append) for _ in range(2)]  # two workers, one store
    try:
        for i in range(20):
            processes[i % 2](
                Event(
                    EventKind.DENIED,
                    at=time.time(),
                    code="invalid_api_key",
                    reason="wrong_secret",
                    key_id=key_id,
                    owner="acme",
                    client="198.51.100.7",
                )
            )
            processes[i % 2].flush(30)
    finally:
        for detectors in processes:
            detectors.close()
    (anomaly,) = events
    assert (anomaly.kind, anomaly.detail["detector"], anomaly.owner) == (
        EventKind.ANOMALY,
        "wrong_secret",
        "acme",
    )
    with KeyManager(url) as keys:
        assert keys.get(key_id).status(time.time()) is KeyStatus.SUSPENDED


def test_the_observability_example_counts_and_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/observability.md's example: events logged, a revoked key's use reported to the
    callback, exact usage per key and day, written when the server stops."""
    import logging

    import httpx

    from examples.observability import app as example
    from keyguard.core.hashing import Hasher
    from tests.api.support import SyncASGITransport

    caplog.set_level(logging.INFO)
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with KeyManager(url, hasher=Hasher(pepper_from_env=False)) as manager:
        key = manager.create("reader", ["agents:read"], owner="acme")
        gone = manager.create("gone", ["agents:read"])
        manager.revoke(gone.key_id, reason="rotated out")
    app = example.create_app(url)
    with httpx.Client(transport=SyncASGITransport(app), base_url="http://testserver") as client:
        auth = {"Authorization": f"UserKey {key.plaintext}"}
        assert [client.get("/agents", headers=auth).status_code for _ in range(3)] == [200] * 3
        assert client.get("/agents/nope", headers=auth).status_code == 404
        assert (
            client.get(
                "/agents", headers={"Authorization": f"UserKey {gone.plaintext}"}
            ).status_code
            == 401
        )
    app.state.observer.close()  # what the lifespan does when the server stops
    lines = example.report(key.key_id, url)
    assert len(lines) == 7
    assert lines[-1].split()[1:3] == ["4", "2xx=3"]
    assert "4xx=1" in lines[-1]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("keyguard key_refused code=revoked_api_key") for m in messages)
    assert any(f"key {gone.key_id} of None used after its end" in m for m in messages)
    documented = [b.text for b in BLOCKS if b.name == "keyguard/observability/model.py"]
    assert any("class EventKind" in text for text in documented)


# -- metrics and notifications -----------------------------------------------------------------
def _load(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_webhook_receiver_example_checks_signatures() -> None:
    from keyguard.observability.webhooks import sign

    receiver = _load(DEPLOY / "webhook_receiver.py", "webhook_receiver")
    secret = "a-webhook-secret-of-32-bytes-ok!"
    body = b'{"type":"keyguard.key.expiring"}'
    now = int(time.time())
    header = sign(secret, body, now)
    assert receiver.verified(secret.encode(), header, body)
    assert not receiver.verified(secret.encode(), header, body + b" ")
    assert not receiver.verified(b"another-secret-of-32-bytes-long!", header, body)
    assert not receiver.verified(secret.encode(), header, body, now=now + 301)
    assert not receiver.verified(secret.encode(), "garbage", body)


def test_notify_cron_line_parses() -> None:
    from keyguard.management.cli import build_parser

    lines = [
        line
        for line in (DEPLOY / "keyguard-notify.cron").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    (line,) = lines
    fields = line.split(None, 6)
    assert fields[:5] == ["0", "*", "*", "*", "*"]
    command = fields[6].split("&& keyguard ", 1)[1]
    args = build_parser().parse_args(shlex.split(command))
    assert args.command == "notify"
    assert args.check
    assert args.webhook == ["https://ops.example.com/hooks/keyguard"]
    assert args.webhook_secret_env == "KEYGUARD_WEBHOOK_SECRET"
    assert args.expiring_within == 7 * 86400
    assert args.rotation_after == 90 * 86400
