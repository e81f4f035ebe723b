"""C kernels, compiled on first use with the machine's C compiler and cached on disk.

The CNN kernels (epilogues, pooling, the convolution helpers, channels-last depthwise) exist
twice: as numba functions in :mod:`ronn_cpu.jit` and as C in ``csrc/``. The C ones are
preferred: a process that runs them never loads LLVM (numba's compiler keeps 75-95 MB of
its code resident, more than a small model's whole working set), calls cost less, and gcc
vectorises the channel loops numba leaves scalar. Each family (``csrc/<family>.c``) becomes
one CPython extension module, built with ``-O3 -march=native -fopenmp`` into
``$RONN_CACHE_DIR/native`` (default ``~/.cache/ronn/native``) under a name hashed from its
sources, the flags, the Python ABI and the CPU, so it is compiled once per machine and
loaded in about a millisecond afterwards, the way numba's cache works.

A facade module (``ronn_cpu/native/<family>.py``) has the numba module's interface; its
functions call the C ones and, where those return ``NotImplemented`` (a strided array, a
dtype or parameters the C code does not cover), the numba kernel, as do names the facade
does not define. Without a compiler, when a build fails, or with ``RONN_NATIVE=0``, the numba
modules serve every call (logged once as a warning on failure).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType

from .. import jit  # noqa: F401  (sets OMP_WAIT_POLICY before a module brings libgomp in)

__all__ = ["FLAGS", "cache_dir", "enabled", "extension", "facade"]

log = logging.getLogger("ronn.native")

SOURCES = Path(__file__).with_name("csrc")
#: families with a C module and a facade
FAMILIES = ("epilogue", "pool", "conv", "channels_last", "norm", "attention")
#: compiler flags (``-march=native`` and ``-fopenmp`` are dropped where the compiler refuses them)
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fPIC", "-shared", "-fvisibility=hidden")

_lock = threading.Lock()
_extensions: dict[str, ModuleType | None] = {}
_warned = False


def enabled() -> bool:
    """Whether native kernels may be used (``RONN_NATIVE=0`` turns them off)."""
    return os.environ.get("RONN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Where compiled modules are kept."""
    root = os.environ.get("RONN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "ronn")
    return Path(root) / "native"


def facade(family: str) -> ModuleType | None:
    """The facade module of ``family``, or None when its C module is unavailable."""
    if family not in FAMILIES or not enabled() or extension(family) is None:
        return None
    return importlib.import_module(f"{__name__}.{family}")


def extension(family: str) -> ModuleType | None:
    """The compiled C module of ``family`` (built on first use), or None if it cannot be built."""
    if family in _extensions:
        return _extensions[family]
    with _lock:
        if family not in _extensions:
            _extensions[family] = _build_and_load(family)
    return _extensions[family]


def _build_and_load(family: str) -> ModuleType | None:
    global _warned
    name = f"ronn_native_{family}"
    try:
        path = _compiled(family, name)
        spec = importlib.util.spec_from_file_location(name, path, loader=importlib.machinery.ExtensionFileLoader(name, str(path)))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as error:  # noqa: BLE001  (no compiler, a failed build: numba serves)
        if not _warned:
            _warned = True
            log.warning("ronn: native %s kernels unavailable (%s); using numba", family, error)
        return None


def _compiled(family: str, name: str) -> Path:
    source = SOURCES / f"{family}.c"
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    key = hashlib.sha256()
    for part in sorted(SOURCES.glob("*.[ch]")):  # a family's file and every header
        if part.suffix == ".h" or part == source:
            key.update(part.name.encode() + part.read_bytes())
    key.update(repr((FLAGS, sysconfig.get_config_var("EXT_SUFFIX"), sys.version, _cpu())).encode())
    filename = f"{name}-{key.hexdigest()[:20]}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    folder = cache_dir()
    if (folder / filename).exists():
        return folder / filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: a private folder in the temporary one instead
        folder = _private_temporary_folder()
        if (folder / filename).exists():
            return folder / filename
    _compile(compiler, source, folder / filename)
    return folder / filename


def _private_temporary_folder() -> Path:
    """``<tmp>/ronn-<uid>/native``, made with mode 0700; refused if anyone else could write it
    (code loaded from a folder others can write to would be theirs)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = Path(tempfile.gettempdir()) / f"ronn-{uid}"
    root.mkdir(mode=0o700, exist_ok=True)
    for folder in (root, root / "native"):
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if folder.is_symlink() or info.st_uid != uid or info.st_mode & 0o022:
            raise PermissionError(f"{folder} is not private to this user")
    return root / "native"


def _compile(compiler: list[str], source: Path, target: Path) -> None:
    """Compile ``source`` into ``target`` atomically (concurrent builders each write their own)."""
    include = sysconfig.get_paths()["include"]
    handle, scratch = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        flags = list(FLAGS)
        while True:
            command = [*compiler, *flags, f"-I{include}", f"-I{SOURCES}", str(source), "-o", scratch, "-lm"]
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
            if result.returncode == 0:
                break
            optional = [flag for flag in ("-march=native", "-fopenmp") if flag in flags]
            if not optional:
                raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
            flags.remove(optional[0])
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def _cpu() -> str:
    """What identifies this CPU's instruction set (``-march=native`` code runs only there)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
