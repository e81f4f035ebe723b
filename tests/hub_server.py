"""A local stand-in for the Hugging Face Hub's file-download protocol, for tests.

It answers what ``huggingface_hub.hf_hub_download`` (2.x) asks, the way the Hub answers:

``HEAD|GET /{owner}/{repo}/resolve/{revision}/{path}`` (``revision`` URL-quoted)
    * a small ("git") file: 200 with ``X-Repo-Commit`` (the resolved commit), ``ETag`` (the git
      blob id, quoted) and ``Content-Length``; GET sends the bytes.
    * a large ("LFS") file, one whose name ends with an ``lfs_suffixes`` entry: 302 to a
      second server on another port, the "CDN", with ``Location``, ``X-Repo-Commit``,
      ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``. The client stops at that redirect
      for the metadata and then GETs the CDN without its ``Authorization`` header.
    * a renamed repository: 307 to the same path under the new name (followed by the client).
    * errors carry the ``X-Error-Code`` header the client turns into its exceptions:
      ``RepoNotFound`` (401 without a token, 404 with one: the Hub does not say whether a
      private repository exists), ``RevisionNotFound`` (404), ``EntryNotFound`` (404, with
      ``X-Repo-Commit``); a wrong token gets 401 with
      ``X-Error-Message: Invalid credentials in Authorization header`` and no code.

``HEAD|GET /blobs/{sha256}`` on the CDN server: the LFS file's bytes.

Repositories are built from folders on disk: each :meth:`Repo.commit` snapshots a folder as a
new commit (with a deterministic 40-hex id) and moves a branch to it, so the older commits stay
reachable by their hash. Every request is recorded, so a test can prove that a cache hit
downloaded nothing (:meth:`HubServer.count`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's content (what the Hub sends as a small file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the servers received."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    authorization: str | None


@dataclass
class Repo:
    """A model repository: commits (id -> {path: bytes}) and refs (branch or tag -> commit id)."""

    repo_id: str
    token: str | None = None
    lfs_suffixes: tuple[str, ...] = (".data", ".bin", ".safetensors")
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)

    def commit(self, folder: str | Path, *, branch: str = "main", message: str = "") -> str:
        """Snapshot every file under ``folder`` as a new commit on ``branch``; its id."""
        root = Path(folder)
        files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
        digest = hashlib.sha1()
        digest.update((self.refs.get(branch, "") + "\n" + message + "\n").encode())
        for path, data in files.items():
            digest.update(f"{path}\0{git_blob_id(data)}\n".encode())
        commit_id = digest.hexdigest()
        self.commits[commit_id] = files
        self.refs[branch] = commit_id
        self.history.append(commit_id)
        return commit_id

    def tag(self, name: str, commit_id: str) -> None:
        """A tag naming ``commit_id``."""
        self.refs[name] = commit_id

    def resolve(self, revision: str) -> str | None:
        """The commit a branch, tag or full commit id names."""
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None

    def is_lfs(self, path: str) -> bool:
        return path.endswith(self.lfs_suffixes)


class HubServer:
    """The Hub and its CDN, two HTTP servers on 127.0.0.1 in background threads."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.renamed: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    # --- set-up -------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, *, token: str | None = None) -> Repo:
        """A new, empty repository; with ``token`` it is private and needs that token."""
        repo = Repo(repo_id, token=token)
        self.repos[repo_id] = repo
        return repo

    def rename(self, old: str, new: str) -> None:
        """Requests for ``old`` redirect to ``new``, as the Hub does for a renamed repository."""
        self.renamed[old] = new

    def start(self) -> HubServer:
        for name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, name))
            server.daemon_threads = True
            server.block_on_close = False
            threading.Thread(target=server.serve_forever, name=f"hub-server-{name}", daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """What HF_ENDPOINT should be."""
        return self._url(0)

    @property
    def cdn(self) -> str:
        return self._url(1)

    def _url(self, index: int) -> str:
        host, port = self._servers[index].server_address[:2]
        return f"http://{host}:{port}"

    # --- what happened ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def count(self, method: str | None = None, *, contains: str = "", server: str | None = None) -> int:
        """How many requests matched the method, a piece of the path and the server."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method)
                and contains in unquote(r.path)
                and (server is None or r.server == server)
            )

    def file_requests(self) -> int:
        """Every request about a file (HEAD or GET, Hub or CDN), none of the client's own."""
        return self.count(contains="/resolve/", server="hub") + self.count(server="cdn")

    def downloads(self) -> int:
        """GET requests for file contents: ``resolve`` on the Hub, blobs on the CDN (not the
        client's own requests, such as its once-a-process ``/api/agent-harnesses``)."""
        return self.count("GET", contains="/resolve/", server="hub") + self.count("GET", server="cdn")

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    # --- answering ----------------------------------------------------------------------------

    def answer_hub(self, method: str, path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        parts = path.split("/")
        # /{owner}/{name}/resolve/{revision}/{path...}
        if len(parts) < 6 or parts[0] != "" or parts[3] != "resolve":
            return _error(404, None, "Not found")
        repo_id = f"{unquote(parts[1])}/{unquote(parts[2])}"
        revision = unquote(parts[4])
        filename = unquote("/".join(parts[5:]))
        if repo_id in self.renamed:
            target = "/".join(["", *self.renamed[repo_id].split("/"), *parts[3:]])
            return 307, {"Location": target}, b""
        repo = self.repos.get(repo_id)
        token = authorization[len("Bearer "):] if authorization and authorization.startswith("Bearer ") else None
        if repo is not None and repo.token is not None and token is not None and token != repo.token:
            return _error(401, None, "Invalid credentials in Authorization header")
        if repo is None or (repo.token is not None and token != repo.token):
            status = 404 if token else 401
            return _error(status, "RepoNotFound", "Repository not found")
        commit_id = repo.resolve(revision)
        if commit_id is None:
            return _error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        files = repo.commits[commit_id]
        if filename not in files:
            status, headers, body = _error(404, "EntryNotFound", "Entry not found")
            headers["X-Repo-Commit"] = commit_id
            return status, headers, body
        data = files[filename]
        headers = {"X-Repo-Commit": commit_id, "Accept-Ranges": "bytes"}
        if repo.is_lfs(filename):
            sha256 = hashlib.sha256(data).hexdigest()
            self.blobs[sha256] = data
            name = quote(filename.rsplit("/", 1)[-1])
            headers.update(
                {
                    "Location": f"{self.cdn}/blobs/{sha256}?filename={name}",
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{git_blob_id(data)}"',
                }
            )
            return 302, headers, b""
        headers.update({"ETag": f'"{git_blob_id(data)}"', "Content-Type": "application/octet-stream"})
        return 200, headers, data

    def answer_cdn(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        sha256 = path.rsplit("/", 1)[-1]
        data = self.blobs.get(sha256) if path.startswith("/blobs/") else None
        if data is None:
            return 404, {"Content-Type": "text/plain"}, b"no such blob"
        return 200, {"ETag": f'"{sha256}"', "Content-Type": "application/octet-stream"}, data


def _error(status: int, code: str | None, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return status, headers, json.dumps({"error": message}).encode()


def _handler(hub: HubServer, name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def _serve(self, send_body: bool) -> None:
            path = urlsplit(self.path).path
            auth = self.headers.get("Authorization")
            hub._record(Request(name, self.command, path, auth))
            if name == "hub":
                status, headers, body = hub.answer_hub(self.command, path, auth)
            else:
                status, headers, body = hub.answer_cdn(self.command, path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body and body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(send_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(send_body=True)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler
