"""Models from the Hugging Face Hub: ``hf://owner/repo[@revision]/path/model.onnx``.

Downloads go through the real ``huggingface_hub`` client (``hf_hub_download``): its cache,
revision pinning, offline mode, tokens and progress bars. A model with external data brings
its data files along, all from the commit the model file resolved to.

Three environment variables are read when a download is made, not when ``huggingface_hub``
is imported (the client reads them once, at import): ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and
the cache location (``HF_HUB_CACHE``, else ``HF_HOME``/hub). Tokens come from the argument,
else ``HF_TOKEN`` or the token saved by ``hf auth login``.

Importing this module imports neither ``huggingface_hub`` nor ``onnx``.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote

from ronn.errors import HubError, HubNotFoundError, ModelFormatError

SCHEME = "hf://"
EXPECTED_FORM = "hf://owner/repo/path/to/model.onnx or hf://owner/repo@revision/path/to/model.onnx"

# revisions that contain a slash: pull-request and conversion refs
_SLASHED_REF = re.compile(r"refs/(?:pr/\d+|convert/[\w.-]+)(?=/|$)")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubReference(NamedTuple):
    """What an ``hf://`` reference names: a file of a model repository at a revision."""

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        """The reference written back as an ``hf://`` URI."""
        at = f"@{self.revision}" if self.revision else ""
        return f"{SCHEME}{self.repo_id}{at}/{self.filename}"


@dataclass(frozen=True)
class HubDownload:
    """A model fetched into the local cache, with the external data files it needs."""

    repo_id: str
    filename: str
    revision: str
    commit: str | None
    path: str
    data_files: list[str] = field(default_factory=list)


def is_hub_uri(source: Any) -> bool:
    """Whether ``source`` is an ``hf://`` reference."""
    return isinstance(source, str) and source.startswith(SCHEME)


def parse_hf_uri(uri: str) -> HubReference:
    """Split ``hf://owner/repo[@revision]/path/model.onnx`` into repo id, file and revision.

    A leading ``models/`` is accepted; a revision containing ``/`` other than ``refs/pr/N`` and
    ``refs/convert/NAME`` is written percent-encoded (``@my%2Fbranch``).
    """
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise HubError(f"not a Hugging Face Hub reference: {uri!r}; expected {EXPECTED_FORM}")
    rest = uri[len(SCHEME):]
    if rest.startswith("models/"):
        rest = rest[len("models/"):]
    first = rest.split("/", 1)[0]
    if first in ("datasets", "spaces", "buckets", "kernels"):
        raise HubError(f"{uri}: only model repositories are supported, not {first}; expected {EXPECTED_FORM}")
    parts = rest.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise HubError(f"malformed Hugging Face Hub reference {uri!r}: no owner/repo; expected {EXPECTED_FORM}")
    owner, name = parts[0], parts[1]
    tail = parts[2] if len(parts) == 3 else ""
    revision = None
    if "@" in name:
        name, after = name.split("@", 1)
        after = f"{after}/{tail}" if tail else after
        slashed = _SLASHED_REF.match(after)
        if slashed:
            revision, tail = slashed.group(0), after[slashed.end() + 1:]
        else:
            revision, _, tail = after.partition("/")
        revision = unquote(revision)
        if not revision:
            raise HubError(f"malformed Hugging Face Hub reference {uri!r}: empty revision after '@'; expected {EXPECTED_FORM}")
    if not name or "@" in owner:
        raise HubError(f"malformed Hugging Face Hub reference {uri!r}; expected {EXPECTED_FORM}")
    filename = tail.strip("/")
    if not filename:
        raise HubError(
            f"Hugging Face Hub reference {uri!r} names no file in the repository; expected {EXPECTED_FORM}"
        )
    if any(p in ("", ".", "..") for p in filename.split("/")):
        raise HubError(f"malformed file path {filename!r} in {uri!r}; expected {EXPECTED_FORM}")
    return HubReference(f"{owner}/{name}", filename, revision)


# --- the environment, read per call ---------------------------------------------------------


def _hf() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors  # noqa: F401 - makes the submodules attributes
    except ImportError as exc:  # a dependency of ronn-onnx, but say so clearly if it is gone
        raise HubError(
            f"loading models from the Hugging Face Hub needs huggingface_hub (pip install huggingface_hub): {exc}"
        ) from None
    return huggingface_hub


def endpoint() -> str:
    """The Hub endpoint downloads go to: ``HF_ENDPOINT`` now, else the client's."""
    value = os.environ.get("HF_ENDPOINT")
    if value:
        return value.rstrip("/")
    return _hf().constants.ENDPOINT


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is on now (or was when huggingface_hub was imported)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE or bool(_hf().constants.is_offline_mode())


def resolve_cache_dir(explicit: str | os.PathLike | None = None) -> str:
    """The cache folder: the argument, else ``HF_HUB_CACHE``, else ``HF_HOME``/hub, else the client's."""
    if explicit is not None:
        return os.path.expanduser(os.fspath(explicit))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return os.path.expandvars(os.path.expanduser(os.environ[name]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"])), "hub")
    return _hf().constants.HF_HUB_CACHE


# --- downloading ----------------------------------------------------------------------------


def _where(repo_id: str, filename: str, revision: str, url: str) -> str:
    return f"file {filename!r} of repository {repo_id!r} at revision {revision!r} on {url}"


_TOKEN_HINT = "token=..., --token, HF_TOKEN or `hf auth login`"


def _fetch_file(
    repo_id: str,
    filename: str,
    *,
    revision: str,
    token: Any,
    cache: str,
    offline: bool,
    url: str,
    purpose: str = "",
) -> str:
    """``hf_hub_download`` of one file, its errors turned into ronn errors.

    ``purpose`` ("external data of tensor 'w' of 'model.onnx'") ends each message.
    """
    hf = _hf()
    hf_errors = hf.errors
    where = _where(repo_id, filename, revision, url)
    why = f" ({purpose})" if purpose else ""
    try:
        return hf.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache,
            token=token,
            local_files_only=offline,
            endpoint=url,
        )
    except hf_errors.RevisionNotFoundError:
        raise HubNotFoundError(
            f"revision {revision!r} not found in repository {repo_id!r} on {url} "
            f"(looking for file {filename!r}){why}"
        ) from None
    except hf_errors.GatedRepoError:
        raise HubError(
            f"repository {repo_id!r} on {url} is gated: accept its conditions on the Hub and pass "
            f"a token ({_TOKEN_HINT}) (looking for file {filename!r} at revision {revision!r}){why}"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise HubNotFoundError(
            f"repository {repo_id!r} not found on {url} (looking for file {filename!r} at "
            f"revision {revision!r}){why}; if it is private, pass a token that can read it "
            f"({_TOKEN_HINT})"
        ) from None
    except hf_errors.RemoteEntryNotFoundError:
        raise HubNotFoundError(
            f"file {filename!r} not found in repository {repo_id!r} at revision {revision!r} on {url}{why}"
        ) from None
    except hf_errors.LocalEntryNotFoundError as exc:
        if offline or is_offline():
            raise HubNotFoundError(
                f"offline and not cached: {where}{why} is not in the cache {cache}, and downloads "
                "are off (HF_HUB_OFFLINE=1 or local_files_only=True); download it once online first"
            ) from None
        reason = exc.__cause__ or exc
        raise HubError(
            f"cannot download {where}{why}: the endpoint could not be reached or did not answer "
            f"as a Hub ({_short(reason)}), and the file is not in the cache {cache}"
        ) from None
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HubError(
                f"authentication failed (HTTP {status}) for {where}{why}: check the token "
                f"({_TOKEN_HINT}): {_short(exc)}"
            ) from None
        raise HubError(f"HTTP error {status} for {where}{why}: {_short(exc)}") from None
    except hf_errors.HFValidationError as exc:
        raise HubError(f"invalid Hub reference, {where}{why}: {exc}") from None
    except Exception as exc:  # OSError, httpx2's errors, anything else the client lets through
        raise HubError(f"cannot download {where}{why}: {type(exc).__name__}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(exc).__name__


def _commit_of(path: str, repo_filename: str, cache: str, repo_id: str, revision: str) -> str | None:
    """The commit a downloaded file came from: its snapshot folder, else the cached ref."""
    parts = os.path.normpath(path).split(os.sep)
    depth = len(repo_filename.split("/"))
    if len(parts) > depth + 1 and parts[-depth - 2] == "snapshots" and _COMMIT.fullmatch(parts[-depth - 1]):
        return parts[-depth - 1]
    if _COMMIT.fullmatch(revision):
        return revision
    storage = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    try:
        with open(os.path.join(storage, "refs", revision)) as handle:
            text = handle.read().strip()
        return text if _COMMIT.fullmatch(text) else None
    except OSError:
        return None


def external_data_locations(path: str, name: str) -> dict[str, str]:
    """Each external data ``location`` of the model at ``path`` -> the first tensor using it.

    Parses the model without reading any data; refuses locations that are absolute or that
    lead outside the model's folder.
    """
    import onnx

    from .external import iter_tensors

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelFormatError(f"{name}: downloaded, but not a valid ONNX model: {_short(exc)}") from None
    locations: dict[str, str] = {}
    for tensor in iter_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            continue  # malformed; the loader names it
        normal = posixpath.normpath(location)
        if (
            location.startswith(("/", "\\"))
            or os.path.isabs(location)
            or ":" in location
            or "\\" in location
            or normal in (".", "..")
            or normal.startswith("../")
        ):
            raise HubError(
                f"{name}: tensor {tensor.name!r} has external data location {location!r}; only "
                "relative paths inside the model's folder are allowed, so it is not downloaded"
            )
        locations.setdefault(location, tensor.name)
    return locations


def fetch_model(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> HubDownload:
    """Download a model file and its external data files into the cache; say what came."""
    if not repo_id or not filename:
        raise HubError(f"a repository id and a file name are needed, got {repo_id!r} and {filename!r}")
    repo_filename = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
    revision = revision or "main"
    url = endpoint()
    cache = resolve_cache_dir(cache_dir)
    # HF_HUB_OFFLINE wins over local_files_only=False: the client blocks every request then
    offline = bool(local_files_only) or is_offline()
    path = _fetch_file(
        repo_id, repo_filename, revision=revision, token=token, cache=cache, offline=offline, url=url
    )
    commit = _commit_of(path, repo_filename, cache, repo_id, revision)
    pinned = commit or revision
    name = f"{SCHEME}{repo_id}@{pinned}/{repo_filename}"
    folder = posixpath.dirname(repo_filename)
    data_files = []
    for location, tensor in sorted(external_data_locations(path, name).items()):
        data_name = posixpath.normpath(posixpath.join(folder, location))
        data_files.append(
            _fetch_file(
                repo_id,
                data_name,
                revision=pinned,
                token=token,
                cache=cache,
                offline=offline,
                url=url,
                purpose=f"external data of tensor {tensor!r} of {repo_filename!r}",
            )
        )
    return HubDownload(repo_id, repo_filename, revision, commit, path, data_files)


def download_model(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> str:
    """Download an ONNX model (and its external data) from the Hub; the local path of the model.

    ``revision`` is a branch, tag or commit hash (default ``main``); every data file comes from
    the commit the model file resolved to. ``local_files_only`` (default: ``HF_HUB_OFFLINE``)
    uses the cache only. Errors are :class:`ronn.errors.HubError`, and
    :class:`ronn.errors.HubNotFoundError` for a missing repository, revision or file.
    """
    return fetch_model(
        repo_id,
        filename,
        revision=revision,
        subfolder=subfolder,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    ).path


def fetch_uri(uri: str, **kwargs: Any) -> HubDownload:
    """:func:`fetch_model` for an ``hf://`` reference; a ``revision`` argument must agree with it."""
    ref = parse_hf_uri(uri)
    revision = kwargs.pop("revision", None)
    if revision and ref.revision and revision != ref.revision:
        raise HubError(f"{uri} names revision {ref.revision!r}, but revision={revision!r} was also given")
    return fetch_model(ref.repo_id, ref.filename, revision=ref.revision or revision, **kwargs)


def download(
    repo_id: str,
    filename: str | None = None,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> str:
    """:func:`download_model`, where ``repo_id`` may also be a whole ``hf://`` reference."""
    options = dict(subfolder=subfolder, token=token, cache_dir=cache_dir, local_files_only=local_files_only)
    if is_hub_uri(repo_id):
        if filename is not None:
            raise HubError(f"{repo_id} already names a file; do not pass filename={filename!r} too")
        return fetch_uri(repo_id, revision=revision, **options).path
    if filename is None:
        raise HubError(f"no file named in repository {repo_id!r}: pass filename=, or {EXPECTED_FORM}")
    return download_model(repo_id, filename, revision=revision, **options)


class HubLoader:
    """The eager half of :class:`ronn_onnx.plugin.LazyHubLoader`."""

    def load(self, source: str, options: dict[str, Any]) -> Any:
        """Download ``source`` (an ``hf://`` reference) and load it as ONNX."""
        from .loader import load_model

        return load_model(fetch_uri(source).path, options)
