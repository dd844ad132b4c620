"""What a new user meets before any training: the package metadata, `make demo`'s words
while it installs, and a README whose two first examples do not collide."""

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_licence_is_an_spdx_expression_setuptools_accepts_without_warning():
    dist_mod = pytest.importorskip("setuptools.dist")
    from setuptools.config.pyprojecttoml import apply_configuration

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(dist_mod.Distribution(), ROOT / "pyproject.toml")
    # The table form {text = "MIT"} warns "project.license as a TOML table is deprecated".
    assert not [w for w in caught if "license" in str(w.message).lower()]
    assert dist.metadata.license_expression == "MIT"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_demo_says_what_it_does_before_each_slow_step(tmp_path):
    venv = tmp_path / "venv"  # absent: make plans the whole install (-n runs nothing)
    plan = subprocess.run(["make", "-n", "demo", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.splitlines()  # fmt: skip
    slow = [i for i, line in enumerate(plan) if " install " in line or "vaelab train" in line]
    assert len(slow) == 4, plan  # pip itself, torch, vaelab, the training
    for i in slow[1:]:
        assert plan[i - 1].startswith('echo "vaelab: '), (plan[i - 1], plan[i])


def test_readme_quick_start_and_python_example_use_different_run_folders():
    text = (ROOT / "README.md").read_text()
    quick = re.search(r"## Quick start\n\n\s+vaelab train .*--out (\S+)", text).group(1)
    python = re.search(r"vaelab\.train\(\{[^)]*out=\"([^\"]+)\"", text).group(1)
    assert quick != python, (quick, python)
