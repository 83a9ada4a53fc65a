"""The kernels' compiler toolchain and cache: compile C into ``$ZOLAB_CACHE``, verify what it holds, load it.

The program VM (``cpu.py``) and the generated programs (``codegen.py``) both build through ``library``, so
neither imports the other. The cache (``$ZOLAB_CACHE``, default ``~/.cache/zolab``) holds, per library:

- ``<name>_<key>.so``: ``key`` hashes the source, the draw core it includes (``zo_core.h``), the flags, the
  compiler's path and version and the CPU, so a changed input never finds an old binary;
- ``<name>_<key>.so.sha256``: ``<sha256 of the .so>  <its file name>`` (``sha256sum`` format). A binary is
  loaded only when this line names it and its bytes hash to it: a truncated file, another library copied under
  the name (with or without its checksum) or a missing checksum fails, and is rebuilt, with a warning.

Writers compile into a temporary folder inside the cache and rename the binary, then its checksum, into place,
under ``.lock`` (``flock``): a reader never loads a half-written file, and a reader that finds a pair mid-rename
waits for the lock and checks again before calling it damaged. A read-only cache is used as it is; what it lacks
is compiled into a private temporary folder, as is everything when the cache is unusable (empty ``ZOLAB_CACHE``,
a file, not creatable): one warning, never the current directory. Each library is verified once per process.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): renames alone keep every file whole
    fcntl = None

HEADER = Path(__file__).with_name("zo_core.h")  # the draw core every library includes
# -ffp-contract=off: no fused multiply-add, so every product is rounded as the reference rounds it.
FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
NATIVE = ["-march=native"]
# OpenMP: libgomp.so.1 is the library torch's CPU wheels load, so the kernels share torch's thread team.
OPENMP = ["-fopenmp"]

_home: Path | None = None  # the cache folder, once resolved; None while unresolved or when unusable
_resolved = False
_read_only = False  # the cache holds what it holds, and nothing more can be written there
_private_dir: Path | None = None
_MISSING = "it is missing"


@functools.cache
def _cpu_tag() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return hashlib.sha1(line.encode()).hexdigest()[:8]
    except OSError:
        pass
    return platform.processor() or "cpu"


@functools.cache
def _compiler() -> tuple[str, str] | None:
    """(path, first line of ``--version``) of ``$CC`` (else ``cc``), or None when there is none."""
    cc = shutil.which(os.environ.get("CC") or "cc")
    if cc is None:
        return None
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
        version = (proc.stdout or proc.stderr).partition("\n")[0]
    except (OSError, subprocess.SubprocessError):
        version = "?"
    return cc, version


def _warn(message: str) -> None:
    warnings.warn(f"zolab: {message}", stacklevel=2)


def cache_dir() -> Path | None:
    """The cache folder, absolute and existing, or None when ``$ZOLAB_CACHE`` names no usable folder (warned
    once; see ``_private``). Resolved once per process."""
    global _home, _resolved
    if _resolved:
        return _home
    _resolved = True
    value = os.environ.get("ZOLAB_CACHE")
    if value is not None and not value.strip():
        _warn(f"ZOLAB_CACHE is empty; compiling the kernels into a private temporary folder, {_private()} "
              "(set ZOLAB_CACHE to a writable folder to keep them)")
        return None
    try:
        folder = Path(value).expanduser() if value is not None else Path.home() / ".cache" / "zolab"
        folder.mkdir(parents=True, exist_ok=True)
    except RuntimeError as err:  # no home folder to default to
        _warn(f"no kernel cache ({err}); compiling the kernels into a private temporary folder, {_private()}")
        return None
    except OSError as err:
        if not folder.is_dir():
            _warn(f"the kernel cache {folder} is not a usable folder ({err}); compiling the kernels into a "
                  f"private temporary folder, {_private()}")
            return None
    _home = folder.resolve()  # absolute: ctypes looks a bare name up on the library path, not here
    return _home


def _private() -> Path:
    """This process's own folder for libraries the cache cannot hold; removed at exit."""
    global _private_dir
    if _private_dir is None:
        _private_dir = Path(tempfile.mkdtemp(prefix="zolab-kernels-"))
        atexit.register(shutil.rmtree, _private_dir, True)
    return _private_dir


def _not_writable(err: OSError) -> None:
    global _read_only
    if not _read_only:
        _read_only = True
        _warn(f"the kernel cache {_home} is not writable ({err}); using what it holds and compiling the rest "
              f"into a private temporary folder, {_private()}")


def _sum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _damage(path: Path) -> str | None:
    """Why ``path`` may not be loaded (its checksum missing, for another file, or not its bytes'), or None."""
    try:
        with open(_sum_path(path), "rb") as f:
            line = f.read(512).decode(errors="replace").split()
        if len(line) != 2 or line[1] != path.name:
            return f"its checksum file names {line[1:] or 'nothing'}, not {path.name}"
        if hashlib.sha256(path.read_bytes()).hexdigest() != line[0]:
            return "its bytes do not match its checksum"
    except FileNotFoundError:
        return "it has no checksum beside it" if path.exists() else _MISSING
    except OSError as err:
        return f"it cannot be read ({err})"
    return None


@contextmanager
def _locked(folder: Path):
    """Hold ``folder/.lock``; OSError when the folder cannot be written."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass  # a file system without locks: the renames still keep every file whole
        yield
    finally:
        os.close(fd)


def _compile(folder: Path, filename: str, source: Path | str, cc: str) -> Path:
    """Compile ``source`` (a .c file or C text) into ``folder/filename`` with its checksum beside it, both
    renamed into place whole. RuntimeError when no flags compile it, OSError when the folder cannot be written."""
    target = folder / filename
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        if isinstance(source, str):
            path = Path(tmp) / (filename[: -len(".so")] + ".c")
            path.write_text(source)
            source = path
        out = Path(tmp) / filename
        for flags in (FLAGS + NATIVE + OPENMP, FLAGS + NATIVE, FLAGS):  # fall back without what a compiler lacks
            cmd = [cc, *flags, str(source), "-o", str(out), "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            raise RuntimeError(f"compiling {source.name} failed:\n{' '.join(cmd)}\n{proc.stderr[-2000:]}")
        check = Path(tmp) / "sum"
        check.write_text(f"{hashlib.sha256(out.read_bytes()).hexdigest()}  {filename}\n")
        os.replace(out, target)
        os.replace(check, _sum_path(target))
    return target


def _from_cache(filename: str, source: Path | str, cc: str) -> Path | None:
    """The verified ``filename`` in the cache, compiled there if it is missing or damaged; None when the cache
    is unusable or cannot be written and does not hold it whole (then the caller compiles a private copy)."""
    home = cache_dir()
    if home is None:
        return None
    target = home / filename
    why = _damage(target)
    if why is None:
        return target
    warned = False
    if not _read_only:
        try:
            with _locked(home):
                why = _damage(target)  # again under the lock: a writer may have finished meanwhile
                if why is None:
                    return target
                if why != _MISSING:
                    warned = True
                    _warn(f"the cached kernel library {target} failed verification ({why}); rebuilding it")
                return _compile(home, filename, source, cc)
        except OSError as err:
            _not_writable(err)
    if why != _MISSING and not warned:
        _warn(f"the cached kernel library {target} failed verification ({why}); compiling a private copy")
    return None


def _open(path: Path, symbols: Sequence[str]) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    missing = [s for s in symbols if not hasattr(lib, s)]
    if missing:
        raise OSError(f"{path} lacks {missing}")
    return lib


def _filename(name: str, source: Path | str) -> str:
    """``<name>_<key>.so``: the key covers all that shapes the binary (the compiler is known to exist)."""
    cc, version = _compiler()
    text = source.read_bytes() if isinstance(source, Path) else source.encode()
    recipe = " ".join(FLAGS + NATIVE + OPENMP) + cc + version + _cpu_tag()
    return f"{name}_{hashlib.sha256(text + HEADER.read_bytes() + recipe.encode()).hexdigest()[:16]}.so"


def library(name: str, source: Path | str, symbols: Sequence[str]) -> ctypes.CDLL:
    """The shared library compiled from ``source`` (a .c file, or C text) with ``symbols`` checked, from the
    cache (verified), else compiled into it, else into a private folder. RuntimeError when no compiler works."""
    found = _compiler()
    if found is None:
        raise RuntimeError("no C compiler found (set $CC or install cc/gcc)")
    cc = found[0]
    filename = _filename(name, source)
    path = _from_cache(filename, source, cc)
    if path is not None:
        try:
            return _open(path, symbols)
        except OSError as err:  # verified, yet not what it should be: this process gets a private copy
            _warn(f"the cached kernel library {path} cannot be used ({err}); compiling a private copy")
    return _open(_compile(_private(), filename, source, cc), symbols)


def cached_text(relative: str, text: str) -> Path:
    """A file under the cache holding exactly ``text`` (written whole if missing or different; in the private
    folder when the cache cannot take it): generated source that a compiler reads from a file."""
    home = cache_dir()
    if home is not None:
        path = home / relative
        try:
            if path.read_text() == text:
                return path
            _warn(f"the cached kernel source {path} is not the source it is named for; rewriting it")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as err:
            _warn(f"the cached kernel source {path} cannot be read ({err}); rewriting it")
        if not _read_only:
            try:
                return _write(path, text)
            except OSError as err:
                _not_writable(err)
    return _write(_private() / relative, text)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: parallel processes never read a half-written file
    return path
