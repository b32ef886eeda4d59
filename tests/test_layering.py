"""The house rules of docs/architecture.md: which packages may import which, and what serving loads.

Static rules read every module's import statements (so a rule holds for code paths no test runs);
the run-time rules start a fresh interpreter and look at ``sys.modules`` after the real entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers")


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                out.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                out.add(node.module)
    return out


def _files(*parts: str) -> list[Path]:
    target = ROOT.joinpath(*parts)
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize(
    ("where", "forbidden"),
    [
        (("disncl", "serve"), HEAVY),
        (("disncl", "app"), HEAVY),
        (("app.py",), HEAVY),
        (("disncl", "losses"), ("disncl.train", "disncl.data")),
        (("disncl", "data"), ("disncl.models",)),
        (("disncl", "methods.py"), (*HEAVY, "numpy")),
        (("disncl", "config.py"), HEAVY),
    ],
)
def test_layers_import_downward_only(where: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    files = _files(*where)
    assert files, f"nothing found at {'/'.join(where)}"
    assert _violations(files, forbidden) == []


def test_the_static_check_sees_a_forbidden_import() -> None:
    bad = ROOT / "disncl" / "serve" / "_layering_probe.py"
    bad.write_text("from torch import nn\nfrom ..models import checkpoint\n", encoding="utf-8")
    try:
        found = _violations([bad], ("torch", "disncl.models"))
    finally:
        bad.unlink()
    assert found == ["disncl/serve/_layering_probe.py imports disncl.models",
                     "disncl/serve/_layering_probe.py imports torch"]


def _modules_after(code: str) -> set[str]:
    heavy = f"sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})"
    probe = f"{code}\nimport sys\nprint('MODULES:', *{heavy})"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split()[1:])


@pytest.mark.parametrize(
    "code",
    [
        # A serving command's help, through the real CLI entry point.
        "import runpy, sys\nsys.argv = ['disncl', 'index', '--help']\n"
        "try:\n    runpy.run_module('disncl', run_name='__main__')\nexcept SystemExit:\n    pass",
        # The app's start-up: its module, the presenter and the parser (the bundle needs files).
        "import app, disncl.app\napp.build_parser().parse_args([])",
        "import disncl.serve, disncl.serve.gallery, disncl.serve.pair_scores",
        # Reading a run's configuration and the method list needs no torch either.
        "import disncl.config, disncl.methods, disncl.data.dataset\ndisncl.config.load_config(None, [])",
    ],
    ids=["index-help", "app-start", "serve", "config"],
)
def test_serving_and_configuration_never_load_torch(code: str) -> None:
    assert _modules_after(code) == set()


def test_serve_declares_the_third_party_packages_it_imports() -> None:
    from disncl.serve import REQUIRES

    # What disncl/serve imports, and what the disncl modules it imports (transitively) import in turn.
    seen: set[str] = set()
    todo = _files("disncl", "serve")
    third_party: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "disncl":
                target = ROOT.joinpath(*name.split("."))
                todo += [q for q in (target.with_suffix(".py"), target / "__init__.py") if q.is_file()]
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    assert third_party == set(REQUIRES)
