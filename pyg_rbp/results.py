"""Writing results so that nothing finished is lost: checked paths, atomic JSON, environment, tables.

Every command that produces numbers writes them through these helpers: output paths are checked
before any work starts (:func:`check_output_file`, :func:`check_output_folder`: a read-only folder,
a directory or a device/FIFO in place of a file is refused up front, not after hours of
training), JSON files are written to a uniquely named temporary file and renamed into place (a
crash never leaves half a file, concurrent writers never share a temporary), every result carries
the environment it was measured on, and the same rows render as a markdown table.
:func:`try_lock` lets processes sharing a results folder claim a piece of work.
"""

from __future__ import annotations

import json
import math
import os
import platform
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class OutputPathError(ValueError):
    """An output path that cannot be written; raised before any work starts."""


def _mode_writable(path: Path) -> bool:
    """Write permission by the mode bits as well as ``os.access`` (root passes ``os.access`` for a
    ``chmod a-w`` folder, which is read-only by intent)."""
    return bool(path.stat().st_mode & stat.S_IWUSR) and os.access(path, os.W_OK)


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _check_folder_writable(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise OutputPathError(f"{what}: {folder} is not a folder")
    if not _mode_writable(folder):
        raise OutputPathError(f"{what}: the folder {folder} is read-only")
    try:  # the way results are written: a temporary file in the folder (catches read-only mounts)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".pyg_rbp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"{what}: cannot write in {folder}: {err.strerror or err}") from None


def check_output_file(path: str | os.PathLike, flag: str = "output") -> Path:
    """Check that a result file can be written at ``path`` (atomically: a temporary file in its
    folder, renamed over it); return the path, else raise :class:`OutputPathError`.

    Refused: a directory, anything but a regular file (``/dev/full``, a FIFO, a socket: replacing
    it would destroy it, and as root would succeed), a read-only file, and a folder (or the nearest
    existing ancestor of a folder still to create) that is not writable.
    """
    path = Path(path).expanduser()
    what = f"{flag} {path}"
    if os.path.lexists(path):
        try:
            info = path.stat()
        except OSError as err:
            raise OutputPathError(f"{what}: {err.strerror or err}") from None
        if stat.S_ISDIR(info.st_mode):
            raise OutputPathError(f"{what}: is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise OutputPathError(
                f"{what}: is not a regular file (a device, FIFO or socket): results are written by "
                "replacing the file, which would destroy it; give a file path"
            )
        if not _mode_writable(path):
            raise OutputPathError(f"{what}: the file is read-only")
    _check_folder_writable(_nearest_existing(path.parent), what)
    return path


def check_output_folder(path: str | os.PathLike, flag: str = "output folder") -> Path:
    """Check that files can be written under the folder ``path`` (created if missing)."""
    path = Path(path).expanduser()
    what = f"{flag} {path}"
    if os.path.lexists(path) and not path.is_dir():
        raise OutputPathError(f"{what}: exists and is not a folder")
    _check_folder_writable(_nearest_existing(path), what)
    return path


def _refuse_non_regular(path: Path) -> None:
    if os.path.lexists(path) and not stat.S_ISREG(path.stat().st_mode):
        raise OutputPathError(f"{path}: is not a regular file; refusing to replace it")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename).

    A directory, device or FIFO at ``path`` is never replaced (:class:`OutputPathError`)."""
    path = Path(path)
    _refuse_non_regular(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            try:  # mkstemp makes 0600; give the file what open() would
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            except OSError:  # a filesystem without permissions (vfat, some network mounts)
                pass
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it too)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _clean(obj: Any) -> Any:
    """Make ``obj`` strict-JSON: NaN/inf become ``None``, tensors and paths plain values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON (NaN -> null), atomically."""
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


class CorruptResultsError(ValueError):
    """A results file exists but is not valid JSON (a hand edit, another program's file)."""


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a file that is not valid JSON raises :class:`CorruptResultsError`
    naming the file and the place of the error."""
    with open(path) as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as err:
            raise CorruptResultsError(
                f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
            ) from None
        except UnicodeDecodeError as err:
            raise CorruptResultsError(f"{path} is not a text (JSON) file: {err}") from None


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """The machine and library versions a result was measured with."""
    import torch_geometric

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import torch_scatter  # noqa: F401

        info["torch_scatter"] = getattr(torch_scatter, "__version__", "installed")
    except ImportError:
        info["torch_scatter"] = None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info["device"] = str(dev)
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
    else:
        info["device_name"] = "cpu"
    return info


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[str],
                   headers: Sequence[str] | None = None, digits: int = 4) -> str:
    """Render ``rows`` (dicts) as a GitHub markdown table of ``columns``."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def human_bytes(n: float | None) -> str:
    """``1536 -> '1.5 KiB'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def atomic_save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    _refuse_non_regular(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temporary name: two processes rendering the same board never write one file
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.png")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            except OSError:
                pass
            fig.savefig(fh, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


@contextmanager
def try_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Try to take the exclusive lock ``path`` (a lock file, never followed through a symlink);
    yields whether this process holds it. Non-blocking: ``False`` means another process holds it.

    The lock file is removed on release. A lock file removed or replaced between opening and
    locking it is re-opened, so two processes never both believe they hold the lock. Without
    ``fcntl`` (Windows) it always yields True.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield True
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it as we opened it: take the next one
    try:
        yield True
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def rename_keys(obj: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    """``obj`` with its keys of an older file (``renamed``: old -> new) under their names now; a
    key already present under its new name wins over its old spelling."""
    return {renamed.get(k, k): v for k, v in obj.items() if not (k in renamed and renamed[k] in obj)}


class ResultsFileConflict(ValueError):
    """A results file holds work done with other settings, which a resumed run must not overwrite."""


def check_settings(path: str | os.PathLike | None, mine: dict[str, Any], old: dict[str, Any], *,
                   varying: Iterable[str] = (), defaults: dict[str, Any] | None = None) -> None:
    """Refuse the results at ``path``, written with settings ``old``, when they differ from ``mine``
    (:class:`ResultsFileConflict` naming the settings that differ): the one comparison behind every
    resume, a :class:`ResumableResults` file or a leaderboard cell. Keys in ``varying`` are not
    compared; a setting ``old`` predates counts at ``defaults[name]``."""
    defaults = defaults or {}
    mine = {k: v for k, v in mine.items() if k not in set(varying)}
    theirs = {k: old.get(k, defaults.get(k)) for k in mine}
    differ = sorted(k for k in mine if _clean(mine[k]) != _clean(theirs[k]))
    if differ:
        raise ResultsFileConflict(
            f"{path} holds results of other settings (they differ in: {', '.join(differ)}); "
            "pass --fresh to overwrite it, or write to another path"
        )


class ResumableResults:
    """One resume policy for every long run: a JSON file filled unit by unit, resumed on rerun.

    A *unit* is one finished piece of work (a seed, a gradient mode, a measured size, a
    leaderboard cell) stored as a dict; ``key(unit)`` says which piece it is. The file is
    ``{"settings": ..., "units": [...], **extra}``.

    The policy, the same for ``train``, ``leaderboard``, ``hopfield``, ``hyperopt`` and ``bench``:

    * a file written with other ``settings`` is refused with :class:`ResultsFileConflict`
      naming the settings that differ, unless ``fresh=True`` (``--fresh``) starts it afresh;
      the keys in ``varying`` (what a rerun may extend, such as the seeds or modes asked for)
      are not compared, and a setting the file predates counts at ``defaults[name]``; a setting
      the file holds under an older name is read under its new one (``renamed``: old -> new);
    * every finished unit in the file is kept, whatever this run asks for; :meth:`done`
      tells a run what to skip;
    * every :meth:`add` rewrites the file atomically, so a crash loses at most the unit in
      progress and never leaves half a file.

    ``path=None`` keeps everything in memory (a run without ``--json``).

    Example::

        store = ResumableResults(path, settings={"dataset": "cora", "seeds": [0, 1]},
                                 key=lambda u: u["seed"], varying=("seeds",))
        for seed in (0, 1):
            if not store.done(seed):
                store.add(train(seed))
    """

    def __init__(self, path: str | os.PathLike | None, settings: dict[str, Any], *,
                 key: Any, fresh: bool = False, varying: Iterable[str] = (),
                 defaults: dict[str, Any] | None = None,
                 units_field: str = "units", settings_field: str = "settings",
                 log: Any = None, renamed: dict[str, str] | None = None) -> None:
        self.path = None if path is None else check_output_file(path, "results file")
        self.settings = dict(settings)
        self.key = key
        self.units_field, self.settings_field = units_field, settings_field
        self.extra: dict[str, Any] = {}
        self.units: list[dict[str, Any]] = []
        self.previous_settings: dict[str, Any] = {}  # the settings of the resumed file, if any
        if self.path is not None and not fresh and self.path.is_file():
            old = read_json(self.path)
            if not isinstance(old, dict):
                raise CorruptResultsError(f"{self.path} is not a results file (expected an object)")
            # a file written before a rename: its settings under the names now
            self.previous_settings = rename_keys(old.get(settings_field) or {}, renamed or {})
            self._check_settings(self.previous_settings, set(varying), defaults or {})
            self.units = list(old.get(units_field) or [])
            self.extra = {k: v for k, v in old.items() if k not in (units_field, settings_field)}
            if self.units and log is not None:
                log(f"resuming {self.path}: {len(self.units)} finished unit(s) kept")

    def _check_settings(self, old: dict[str, Any], varying: set[str],
                        defaults: dict[str, Any]) -> None:
        check_settings(self.path, self.settings, old, varying=varying, defaults=defaults)

    def keys(self) -> set[Any]:
        """The keys of every finished unit."""
        return {self.key(u) for u in self.units}

    def done(self, key: Any) -> bool:
        """Whether the unit ``key`` is already finished (kept from the file or added)."""
        return any(self.key(u) == key for u in self.units)

    def get(self, key: Any) -> dict[str, Any] | None:
        """The finished unit ``key``, or ``None``."""
        return next((u for u in self.units if self.key(u) == key), None)

    def add(self, unit: dict[str, Any], **extra: Any) -> None:
        """Record a finished unit (replacing one of the same key) and write the file."""
        k = self.key(unit)
        self.units = [u for u in self.units if self.key(u) != k] + [unit]
        self.extra.update(extra)
        self.write()

    def document(self) -> dict[str, Any]:
        """The JSON document as it is (or would be) on disk."""
        return {self.settings_field: self.settings, **self.extra, self.units_field: self.units}

    def write(self, **extra: Any) -> None:
        """Write the document atomically (a no-op without a path); ``extra`` adds top-level fields."""
        self.extra.update(extra)
        if self.path is not None:
            atomic_write_json(self.path, self.document())
