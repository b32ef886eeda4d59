"""``pip install .`` gives a working ``disncl`` command (in a fresh virtual environment, offline)."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pip_install_gives_a_disncl_command(tmp_path: Path) -> None:
    # Only the package and its metadata travel; the dependencies come from this interpreter's
    # site-packages (the environment sees them, --no-deps keeps pip off the network).
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "disncl", src / "disncl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    done = subprocess.run([str(env_dir / "bin" / "disncl"), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("synth", "train", "eval", "bench", "export", "index", "shards"):
        assert command in done.stdout
    # The installed copy answers, not the checkout.
    where = subprocess.run([str(python), "-c", "import disncl; print(disncl.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert str(env_dir) in where.stdout, where.stdout
