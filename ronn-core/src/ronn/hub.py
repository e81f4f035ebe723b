"""Models from the Hugging Face Hub, through ronn-onnx and huggingface_hub.

```python
import ronn

path = ronn.hub.download("hf://owner/repo/onnx/model.onnx")            # main
path = ronn.hub.download(repo_id="owner/repo", filename="model.onnx", revision="v1.0")
sess = ronn.InferenceSession("hf://owner/repo@v1.0/model.onnx")        # the same, in one step
```

Everything forwards to :mod:`ronn_onnx.hub`, imported on the first call: importing this
module imports neither huggingface_hub nor onnx.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import HubError

if TYPE_CHECKING:
    from ronn_onnx.hub import HubReference

__all__ = ["download", "parse_uri"]


def _impl() -> Any:
    try:
        from ronn_onnx import hub
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "ronn_onnx":
            raise HubError(
                "loading models from the Hugging Face Hub needs ronn-onnx: pip install ronn-onnx"
            ) from None
        raise
    return hub


def download(
    repo_id: str | None = None,
    filename: str | None = None,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> str:
    """Download an ONNX model and its external data files; return the model's local path.

    ``repo_id`` is ``"owner/repo"`` (with ``filename``) or a whole reference
    ``"hf://owner/repo[@revision]/path/model.onnx"``. ``revision``: a branch, tag or commit
    hash (default ``main``). ``local_files_only`` (default: ``HF_HUB_OFFLINE``): use the cache
    only. Files land in huggingface_hub's cache (``cache_dir``, ``HF_HUB_CACHE`` or
    ``HF_HOME``); a second call for the same commit downloads nothing.

    Raises :class:`ronn.errors.HubNotFoundError` for a missing repository, revision or file
    (or one not cached while offline) and :class:`ronn.errors.HubError` for other failures.
    """
    if repo_id is None:
        raise HubError("ronn.hub.download needs repo_id= (\"owner/repo\" or an hf:// reference)")
    return _impl().download(
        repo_id,
        filename,
        revision=revision,
        subfolder=subfolder,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )


def parse_uri(uri: str) -> HubReference:
    """``hf://owner/repo[@revision]/path`` -> ``(repo_id, filename, revision)`` (a named tuple)."""
    return _impl().parse_hf_uri(uri)
