"""Fetch or build the command-line tools the install tests and `make` need, into a cache outside the repo.

Go tools are built from the Go module proxy at pinned versions; promtool and prometheus come from the
Debian package `prometheus`; the Prometheus Operator's CRDs come from its Go module. Each Go tool lives
under <cache>/<name>-<version>/ so a version bump rebuilds.

    python -m hack.floe_tools helm kustomize promtool   # prints one path per tool
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

GO_TOOLS = {
    # name: (go package, pinned version)
    "helm": ("helm.sh/helm/v3/cmd/helm", "v3.19.0"),
    "kustomize": ("sigs.k8s.io/kustomize/kustomize/v5", "v5.8.0"),
}
# promtool and prometheus ship in one Debian package; the version is whatever bookworm carries.
DEBIAN_TOOLS = {"promtool": "prometheus", "prometheus": "prometheus"}
# Files from a Go module, fetched (and checked against the Go checksum database) by `go mod download`.
GO_MODULE_FILES = {
    # name: (module, pinned version, folder in the module)
    "prometheus-operator-crds": (
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        "example/prometheus-operator-crd",
    ),
}


class ToolUnavailable(RuntimeError):
    """A tool could not be fetched or built here (no network, no Go, no apt)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("FLOE_TOOLS_DIR") or os.path.join(base, "floe", "tools"))


def go_tool(name: str) -> Path:
    package, version = GO_TOOLS[name]
    target_dir = cache_dir() / f"{name}-{version}"
    binary = target_dir / name
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise ToolUnavailable(f"{name}: Go toolchain not found on PATH (needed to build {package}@{version})")
    target_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(target_dir), CGO_ENABLED="0", GOFLAGS="-trimpath")
    result = subprocess.run(
        [go, "install", "-ldflags=-s -w", f"{package}@{version}"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0 or not binary.exists():
        raise ToolUnavailable(f"{name}: go install {package}@{version} failed:\n{result.stderr[-4000:]}")
    return binary


def debian_tool(name: str) -> Path:
    found = shutil.which(name)
    if found:
        return Path(found)
    package = DEBIAN_TOOLS[name]
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ToolUnavailable(f"{name}: not on PATH; install the Debian package `{package}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "--no-install-recommends", package]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ToolUnavailable(f"{name}: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    found = shutil.which(name)
    if not found:
        raise ToolUnavailable(f"{name}: package `{package}` installed but {name} is not on PATH")
    return Path(found)


def go_module_files(name: str) -> Path:
    module, version, folder = GO_MODULE_FILES[name]
    go = shutil.which("go")
    if go is None:
        raise ToolUnavailable(f"{name}: Go toolchain not found on PATH (needed to fetch {module}@{version})")
    result = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolUnavailable(f"{name}: go mod download {module}@{version} failed:\n{result.stderr[-4000:]}")
    return Path(json.loads(result.stdout)["Dir"]) / folder


def ensure(name: str) -> Path:
    """Path to a working `name` binary (or folder of files), fetching or building it first if needed."""
    if name in GO_TOOLS:
        return go_tool(name)
    if name in DEBIAN_TOOLS:
        return debian_tool(name)
    if name in GO_MODULE_FILES:
        return go_module_files(name)
    raise KeyError(f"unknown tool {name!r}; known: {sorted([*GO_TOOLS, *DEBIAN_TOOLS, *GO_MODULE_FILES])}")


def main(argv: list[str]) -> int:
    names = argv or [*GO_TOOLS, *DEBIAN_TOOLS, *GO_MODULE_FILES]
    for name in names:
        try:
            print(ensure(name))
        except ToolUnavailable as err:
            print(err, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
