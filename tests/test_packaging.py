"""The package builds a wheel and an sdist that install cleanly in a fresh virtual environment.

keyguard is installed from a checkout or a git URL (it is not on the public index), so the
distribution files must be right: every module and ``py.typed`` in the wheel, nothing else; the
sdist carries the tests and examples. In a fresh venv holding only the core install, ``import
keyguard`` works, the CLI runs, and each adapter refuses to import with one clear message naming
the extra to install. (``.ci/run`` also installs the wheel with every extra and imports each
adapter.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ADAPTER_EXTRAS = {
    "keyguard.adapters.asgi": None,
    "keyguard.adapters.wsgi": None,
    "keyguard.adapters.starlette": "starlette",
    "keyguard.adapters.fastapi": "fastapi",
    "keyguard.adapters.flask": "flask",
    "keyguard.adapters.django": "django",
    "keyguard.adapters.drf": "django",
    "keyguard.client.httpx": "client",
    "keyguard.client.requests": "client",
    "keyguard.dashboard": "dashboard",
}
#: Files the package ships besides modules: the dashboard's templates and static assets.
PACKAGE_DATA = {
    "keyguard/dashboard/templates": {".html"},
    "keyguard/dashboard/static": {".css", ".js"},
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_wheel_holds_every_module_and_nothing_else(dists: tuple[Path, Path]) -> None:
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "keyguard").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (
            p.suffix in {".py", ".typed"}
            or p.suffix in PACKAGE_DATA.get(p.parent.relative_to(ROOT).as_posix(), set())
        )
    }
    assert modules <= names, sorted(modules - names)
    assert "keyguard/py.typed" in names
    assert "keyguard/dashboard/templates/base.html" in names
    assert "keyguard/dashboard/static/dashboard.css" in names
    packaged = {n for n in names if ".dist-info/" not in n}
    assert packaged == modules, sorted(packaged - modules)
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "keyguard = keyguard.management.cli:main" in entry_points


def test_sdist_carries_tests_examples_and_docs(dists: tuple[Path, Path]) -> None:
    _, sdist = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/stores/contract.py",
        "examples/quickstart/fastapi_app.py",
        "keyguard/py.typed",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".pyc", ".db"))]


def test_core_install_in_a_fresh_venv(dists: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, _ = dists
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = """
import importlib, json, sys
NAMES = %s
import keyguard
loaded = sorted(m for m in ("starlette", "fastapi", "flask", "django", "redis", "uvicorn")
                if m in sys.modules)
errors = {}
for name in NAMES:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        errors[name] = str(exc)
print(json.dumps({"version": keyguard.__version__, "loaded": loaded, "errors": errors}))
""".replace("%s", json.dumps(list(ADAPTER_EXTRAS)))
    out = subprocess.run(
        [str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    result = json.loads(out.stdout)
    assert result["loaded"] == []
    for module, extra in ADAPTER_EXTRAS.items():
        if extra is None:
            assert module not in result["errors"], result["errors"].get(module)
        else:
            message = result["errors"][module]
            assert f"keyguard[{extra}]" in message, message
            assert "\n" not in message
    cli = subprocess.run(
        [str(env_dir / "bin" / "keyguard"), "scopes"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert cli.returncode == 0, cli.stderr
    assert "agents:read" in cli.stdout
