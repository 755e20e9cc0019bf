"""The README cannot drift: every fenced code block in it names where it comes from, its text is
an excerpt of that file, and the quickstart apps it shows are served for real here (uvicorn,
Flask's server and Django's runserver in subprocesses, keys from the ``keyguard`` CLI)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keyguard.management import KeyManager

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

# A block is announced by an HTML comment on the line(s) just above its fence:
#   <!-- from: examples/quickstart/fastapi_app.py -->   its text is an excerpt of that file
#   <!-- run: quickstart -->                             a test below executes the block
_MARKER = re.compile(r"<!--\s*(?P<kind>from|run):\s*(?P<path>\S+)\s*-->")
_FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    source: str | None
    kind: str = "from"


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        source, kind = None, "from"
        for back in (start - 1, start - 2):
            if back >= 0:
                mark = _MARKER.search(lines[back])
                if mark is not None:
                    source, kind = mark.group("path"), mark.group("kind")
                    break
        blocks.append(Block(start + 1, m.group("lang"), "\n".join(body), source, kind))
        i += 1
    return blocks


def is_excerpt(block: str, source: str) -> bool:
    """Whether ``block``'s lines appear, in order and contiguous, in ``source`` (after removing
    a common indentation from both: excerpts of a class body may be shown dedented)."""
    want = textwrap.dedent(block).strip("\n").splitlines()
    have = source.splitlines()
    if not want:
        return False
    stripped = [h.strip() for h in have]
    first = want[0].strip()
    for i, line in enumerate(stripped):
        if line != first:
            continue
        window = have[i : i + len(want)]
        if len(window) == len(want) and textwrap.dedent("\n".join(window)).splitlines() == want:
            return True
    return False


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_blocks_and_the_parser_finds_them() -> None:
    assert len(BLOCKS) >= 5
    assert readme_blocks("<!-- from: a.py -->\n```python\nx = 1\n```\n") == [
        Block(2, "python", "x = 1", "a.py")
    ]
    assert readme_blocks("<!-- run: cli -->\n```bash\nls\n```\n") == [
        Block(2, "bash", "ls", "cli", "run")
    ]
    assert is_excerpt("b = 2\nc = 3", "a = 1\nb = 2\nc = 3\n")
    assert not is_excerpt("b = 2\nd = 4", "a = 1\nb = 2\nc = 3\nd = 4\n")
    assert is_excerpt("def f():\n    pass", "class A:\n    def f():\n        pass\n")


def run_block(name: str) -> Block:
    (block,) = [b for b in BLOCKS if b.kind == "run" and b.source == name]
    return block


#: The shell blocks (``<!-- run: NAME -->``) and the test that executes each one.
RUNNERS = {
    "first-run": "test_first_run_block",
    "quickstart": "test_quickstart_block",
    "install": "test_install_block",
    "cli": "test_cli_block",
    "development": "test_development_block",
}


#: The files the README quotes (``<!-- from: PATH -->``) and the test that runs each one.
EXCERPT_SOURCES = {
    "examples/quickstart/fastapi_app.py": (
        "tests/test_readme.py::test_quickstart_app_serves_keys_from_the_store"
    ),
    "examples/quickstart/flask_app.py": (
        "tests/test_readme.py::test_quickstart_app_serves_keys_from_the_store"
    ),
    "examples/django_project/settings.py": (
        "tests/test_readme.py::test_quickstart_app_serves_keys_from_the_store"
    ),
    "examples/django_project/views.py": (
        "tests/test_readme.py::test_quickstart_app_serves_keys_from_the_store"
    ),
    "examples/snippets/keys_from_code.py": "tests/test_snippets.py::test_keys_from_code",
    "examples/snippets/redis_limits.py": "tests/test_snippets.py::test_redis_limits",
    "docs/mutation.md": "tests/test_docs.py::test_mutation_commands",
}


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"README.md:{b.line}")
def test_every_block_is_an_excerpt_of_a_tested_file(block: Block) -> None:
    assert block.source is not None, (
        f"README.md:{block.line}: announce the block with <!-- from: path --> "
        "(a file the tests run) or <!-- run: NAME --> (a block a test executes)"
    )
    if block.kind == "run":
        assert block.source in RUNNERS, f"README.md:{block.line}: no runner {block.source!r}"
        assert RUNNERS[block.source] in globals()
        return
    where = EXCERPT_SOURCES.get(block.source)
    assert where is not None, f"README.md:{block.line}: which test runs {block.source}?"
    test_file, _, test_name = where.partition("::")
    assert f"def {test_name}(" in (ROOT / test_file).read_text(encoding="utf-8"), where
    path = ROOT / block.source
    assert path.is_file(), f"README.md:{block.line}: {block.source} does not exist"
    assert is_excerpt(block.text, path.read_text(encoding="utf-8")), (
        f"README.md:{block.line}: the block is not an excerpt of {block.source}"
    )


# -- the quickstart apps, served for real ----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(argv: list[str], port: int, env: dict[str, str], cwd: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"{argv[0]} exited with {proc.returncode}:\n{out}")
            try:
                httpx.get(base + "/health", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{argv} did not answer within 60 s")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@dataclass(frozen=True)
class Keys:
    reader: str
    writer: str


@pytest.fixture
def store_env(tmp_path: Path) -> tuple[dict[str, str], Keys]:
    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    with KeyManager(url) as keys:
        reader = keys.create("reader", ["agents:read"]).plaintext
        writer = keys.create("writer", ["agents:read", "agents:write"]).plaintext
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env.update(KEYGUARD_STORE_URL=url, PYTHONPATH=str(ROOT), DJANGO_SECRET_KEY="test-only")
    return env, Keys(reader, writer)


def quickstart_servers() -> list[object]:
    return [
        pytest.param(
            lambda port: [
                str(BIN / "uvicorn"),
                "examples.quickstart.fastapi_app:app",
                "--port",
                str(port),
            ],
            201,
            id="fastapi",
        ),
        pytest.param(
            lambda port: [
                str(BIN / "flask"),
                "--app",
                "examples.quickstart.flask_app",
                "run",
                "--port",
                str(port),
            ],
            201,
            id="flask",
        ),
        pytest.param(
            lambda port: [
                sys.executable,
                "examples/django_project/manage.py",
                "runserver",
                "--noreload",
                str(port),
            ],
            201,
            id="django",
        ),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "created"), quickstart_servers())
def test_quickstart_app_serves_keys_from_the_store(
    argv: object, created: int, store_env: tuple[dict[str, str], Keys]
) -> None:
    env, keys = store_env
    port = _free_port()
    make_argv = argv
    assert callable(make_argv)
    with serve(make_argv(port), port, env, ROOT) as base:
        reader = {"Authorization": f"UserKey {keys.reader}"}
        writer = {"Authorization": f"UserKey {keys.writer}"}
        assert httpx.get(base + "/health").status_code == 200
        r = httpx.get(base + "/agents")
        assert r.status_code == 401
        assert r.json()["code"] == "missing_api_key"
        assert r.headers["content-type"].startswith("application/problem+json")
        r = httpx.get(base + "/agents", headers=reader)
        assert r.status_code == 200, r.text
        r = httpx.post(base + "/agents", headers=reader, json={})
        assert r.status_code == 403
        assert r.json()["code"] == "insufficient_scope"
        assert httpx.post(base + "/agents", headers=writer, json={}).status_code == created
        r = httpx.get(base + "/agents", headers={"Authorization": "UserKey kg_nonsense"})
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_api_key_format"


# -- the shell blocks, executed --------------------------------------------------------------
def _extras() -> set[str]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as fh:
        return set(tomllib.load(fh)["project"]["optional-dependencies"])


def _copy_checkout(dest: Path) -> Path:
    """The tracked files of the repository (plus this working tree's changes), as a user's
    fresh checkout would have them."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
    return dest


def _shell_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)
    return env


_PIP_LINE = re.compile(r'^pip install (?P<spec>"?\.(\[(?P<extras>[a-z,]+)\])?"?)\s*(#.*)?$')


def _check_pip_line(line: str) -> None:
    m = _PIP_LINE.match(line.strip())
    assert m is not None, f"not a pip install from the checkout: {line!r}"
    named = set(filter(None, (m.group("extras") or "").split(",")))
    comment = line.partition("#")[2]
    named |= set(re.findall(r"\[([a-z]+)\]", comment))
    assert named <= _extras(), named - _extras()


def test_install_block() -> None:
    lines = [x for x in run_block("install").text.splitlines() if x.strip()]
    assert lines
    for line in lines:
        _check_pip_line(line)  # the wheel itself is installed for real in test_packaging.py


def test_development_block() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for line in run_block("development").text.splitlines():
        for command in filter(None, (c.strip() for c in line.split("&&"))):
            assert command in ci, f".ci/run does not run {command!r}"


@pytest.mark.slow
def test_cli_block(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    script = run_block("cli").text.replace("sqlite:///./keyguard.db", url)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script + '\nprintf "KEY_ID=%s\\n" "$KEY_ID"'],
        cwd=tmp_path,
        env=_shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    key_id = result.stdout.rsplit("KEY_ID=", 1)[1].strip()
    with KeyManager(url) as keys:
        record = keys.get(key_id)
        assert record.status(time.time()).value == "revoked"
        assert record.rotated_at is not None
        assert {e.action for e in keys.audit(key_id=key_id)} >= {"create", "rotate", "revoke"}


@pytest.mark.slow
def test_quickstart_block(tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    port = _free_port()
    lines = []
    for line in run_block("quickstart").text.splitlines():
        if line.startswith("pip install"):
            _check_pip_line(line)  # installed already: this test runs inside that venv
            continue
        if line.strip() == "sleep 2":  # a loaded CI machine needs longer than a laptop
            line = (
                f"for _ in $(seq 300); do curl -s localhost:{port}/health && break; sleep 0.1; done"
            )
        lines.append(line.replace("8000", str(port)))
    script = "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + "\n".join(lines)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=checkout,
        env={**_shell_env(tmp_path), "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"agents":["triage"]' in result.stdout
    assert '"code":"missing_api_key"' in result.stdout
    assert (checkout / "keyguard.db").is_file()


@pytest.mark.slow
def test_first_run_block(tmp_path: Path) -> None:
    """The README's two first commands: the demo one runs for real in a fresh copy of the
    checkout (a new venv, the install, the demo answering with the key it printed); the test
    one is what ``.ci/run`` runs."""
    demo_line, test_line = (
        x for x in run_block("first-run").text.splitlines() if x and not x.startswith("#")
    )
    assert test_line in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    checkout = _copy_checkout(tmp_path / "checkout")
    port = _free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"{demo_line} --port {port}"],
        cwd=checkout,
        env=_shell_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        admin = None
        deadline = time.monotonic() + 400
        for line in proc.stdout:
            if "admin key:" in line:
                admin = line.split("admin key:", 1)[1].split()[0]
            if admin and "Uvicorn running" in line:
                break
            assert time.monotonic() < deadline, "the demo did not start"
        assert admin is not None, "the demo printed no admin key"
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/health").status_code == 200:
                    break
            time.sleep(0.1)
        r = httpx.get(base + "/agents", headers={"Authorization": f"UserKey {admin}"})
        assert r.status_code == 200, r.text
        assert httpx.get(base + "/agents").json()["code"] == "missing_api_key"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
