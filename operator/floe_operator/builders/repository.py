"""The Project's Git repository in a pod: an init container that clones it, and its credentials volume.

Workspaces clone into their home volume (once; later starts keep the user's clone), FineTuneJobs that
run code from the repository into a fresh volume. Pure functions.
"""

from __future__ import annotations

from posixpath import basename
from typing import Any

from floe_operator.api.project import Repository

GIT_IMAGE = "alpine/git:v2.47.2"
CLONE_CONTAINER = "clone-repository"
GIT_CREDENTIALS_DIR = "/var/run/floe/git"
CREDENTIALS_VOLUME = "git-credentials"

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Clones the repository under $FLOE_CLONE_ROOT once; an existing clone is left as it is.
# Credentials are read from the mounted Secret's files, never put on a command line.
CLONE_SCRIPT = r"""set -eu
dest="$FLOE_CLONE_ROOT/$FLOE_REPO_DIR"
if [ -d "$dest/.git" ]; then echo "floe: $dest already holds the repository; leaving it as it is"; exit 0; fi
creds="$FLOE_GIT_CREDENTIALS"
if [ -f "$creds/ssh-privatekey" ]; then
  install -m 600 "$creds/ssh-privatekey" /tmp/id
  if [ -f "$creds/known_hosts" ]; then hosts="-o UserKnownHostsFile=$creds/known_hosts -o StrictHostKeyChecking=yes"
  else hosts="-o UserKnownHostsFile=/tmp/known_hosts -o StrictHostKeyChecking=accept-new"; fi
  export GIT_SSH_COMMAND="ssh -i /tmp/id $hosts"
fi
if [ -f "$creds/password" ]; then
  git config --global credential.helper \
    '!f() { echo "username=$(cat "$FLOE_GIT_CREDENTIALS/username" 2>/dev/null || echo git)"
            echo "password=$(cat "$FLOE_GIT_CREDENTIALS/password")"; }; f'
fi
git clone --branch "$FLOE_REPO_BRANCH" --single-branch -- "$FLOE_REPO_URL" "$dest"
"""


def repo_dir(url: str) -> str:
    """Directory a repository is cloned into: its last path element without ``.git``."""
    name = basename(url.rstrip("/").split(":")[-1])
    name = name.removesuffix(".git")
    return name or "repository"


def clone_container(
    repository: Repository, *, image: str, volume: str, root: str, branch: str | None = None
) -> dict[str, Any]:
    """An init container cloning ``repository`` (at ``branch``, else its own) into ``root`` on ``volume``;
    the pod needs a ``tmp`` emptyDir and, with credentials, :func:`credentials_volume`."""
    mounts = [{"name": volume, "mountPath": root}, {"name": "tmp", "mountPath": "/tmp"}]
    if repository.credentials_secret_ref:
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": GIT_CREDENTIALS_DIR, "readOnly": True})
    return {
        "name": CLONE_CONTAINER,
        "image": image,
        "command": ["/bin/sh", "-c", CLONE_SCRIPT],
        # git's own words (authentication failed, remote branch not found, could not connect) become the
        # container's termination message, which the owner's status reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "FLOE_CLONE_ROOT", "value": root},
            {"name": "FLOE_REPO_URL", "value": repository.url},
            {"name": "FLOE_REPO_BRANCH", "value": branch or repository.branch},
            {"name": "FLOE_REPO_DIR", "value": repo_dir(repository.url)},
            {"name": "FLOE_GIT_CREDENTIALS", "value": GIT_CREDENTIALS_DIR},
        ],
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": mounts,
    }


def credentials_volume(repository: Repository) -> dict[str, Any] | None:
    if repository.credentials_secret_ref is None:
        return None
    return {
        "name": CREDENTIALS_VOLUME,
        "secret": {"secretName": repository.credentials_secret_ref.name, "defaultMode": 0o440},
    }


def clone_failure(pods: list[dict[str, Any]]) -> str | None:
    """git's message from a pod whose repository clone failed (its main container never started); the last
    failure of a clone the kubelet is retrying counts too."""
    for pod in pods:
        for status in pod.get("status", {}).get("initContainerStatuses") or ():
            state = status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated")
            if status.get("name") == CLONE_CONTAINER and state and state.get("exitCode"):
                return (state.get("message") or f"git exited with code {state['exitCode']}").strip()[-2048:]
    return None
