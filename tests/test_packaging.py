"""The install story: a wheel and an sdist build, pass ``twine check``, and the wheel installs into a
fresh virtual environment where the package imports and the command line answers ``--help``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The CPU build of torch, as the Makefile pins it: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN = os.environ.get("TORCH_PIN", "torch==2.13.0")


def run(*command: str | Path, cwd: Path | None = None) -> str:
    # No PYTHONPATH: the fresh environment must import its own installed copy.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_wheel_builds_passes_twine_check_installs_and_runs(tmp_path):
    pytest.importorskip("build", reason="pip install -e '.[dev]' brings build and twine")
    pytest.importorskip("twine")
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the working tree
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "site", "build", "dist", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)

    env_dir = tmp_path / "fresh-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    run(bin_dir / "python", "-m", "pip", "install", "-q", TORCH_PIN, wheels[0])
    version = run(
        bin_dir / "python", "-c", "import w2s_generate as w2s; print(w2s.__version__, w2s.__file__)"
    )
    assert str(env_dir) in version  # the installed copy, not this checkout
    assert "usage: w2s-generate" in run(bin_dir / "w2s-generate", "--help")


def test_every_public_name_has_one_home():
    """``__all__`` (what ruff and star-imports read) and the lazy-import table name the same names."""
    import w2s_generate as w2s

    assert sorted(w2s.__all__) == sorted([*w2s._HOMES, "scoring"])
    assert len(set(w2s.__all__)) == len(w2s.__all__)
