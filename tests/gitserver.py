"""A Git server on loopback for tests: Git's smart HTTP (`git http-backend`) over TLS, behind HTTP basic auth.

It serves every bare repository under its root at https://127.0.0.1:<port>/<name>.git to the one user it
is given, and answers 401 to any other credentials, as a Git host does to a wrong token.
"""

from __future__ import annotations

import base64
import hmac
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse


def git(*args: str, cwd: Path) -> str:
    # safe.directory: a checkout may belong to the notebook's user, not to the test's
    options = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "safe.directory=*"]
    return subprocess.run(["git", *options, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def served_repository(root: Path, name: str, branches: dict[str, dict[str, str]]) -> Path:
    """Makes the bare repository `name` with one commit per branch (its files: path -> text), each branch
    after the first (main) starting from the one before; returns the directory to serve it from."""
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    for branch, files in branches.items():
        if branch != "main":
            git("checkout", "-q", "-b", branch, cwd=work)
        for path, text in files.items():
            (work / path).write_text(text)
        git("add", *files, cwd=work)
        git("commit", "-q", "-m", branch, cwd=work)
    git("clone", "-q", "--bare", str(work), str(root / "served" / name), cwd=root)
    return root / "served"


class GitServer:
    def __init__(self, root: Path, username: str, password: str, cert: Path, key: Path):
        self.root = root
        self.expected = f"Basic {base64.b64encode(f'{username}:{password}'.encode()).decode()}"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHandler)
        self.server.git = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def url(self, repository: str) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/{repository}"

    def __enter__(self) -> GitServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()


class _GitHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server hook's names)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        git: GitServer = self.server.git
        if not hmac.compare_digest(self.headers.get("Authorization", ""), git.expected):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(git.root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": url.path, "QUERY_STRING": url.query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "REMOTE_USER": "git",
               "REMOTE_ADDR": self.client_address[0]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.decode().split(":", 1) for line in head.split(b"\r\n") if b":" in line]
        status = next((int(value.split()[0]) for name, value in headers if name.lower() == "status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "status":
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_) -> None:
        pass
