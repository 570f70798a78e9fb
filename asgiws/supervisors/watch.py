"""Watching the app's files for `--reload` (asgiws.supervisors.reload): which paths count, and
two ways to notice that one changed.

- `FileFilter`: uvicorn's rules for --reload-include / --reload-exclude (below), used by both.
- `WatchfilesWatcher`: the operating system's change notifications (inotify), through the
  `watchfiles` package, the `asgiws[reload]` extra. Nothing is read until something changes.
- `PollingWatcher`: without watchfiles, every file under the watched directories is stat()ed
  every --reload-delay; a changed modification time or size, a new file or a deleted one is a
  change. The reloader says so in one warning line, with how to install watchfiles.

Each runs in a thread of its own and calls `report(paths)` with the changed paths that pass the
filter, once per batch of changes; `stop()` ends the thread within a fraction of a second. The
supervisor's main thread never blocks on the file system.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

logger = logging.getLogger("asgiws.error")

# uvicorn's defaults. A pattern given in --reload-exclude is taken out of the default includes,
# and one given in --reload-include out of the default excludes, so either list can undo the
# other's defaults (`--reload-include '.env'` watches that hidden file).
DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")

# watchfiles' own default: how long the files must be quiet before a batch of changes is reported.
WATCHFILES_STEP_MS = 50

# The polling interval's floor, whatever --reload-delay says: each poll walks the whole tree.
POLL_MIN_INTERVAL = 0.1
# And the poll waits at least this many times as long as its last walk took, so that a large
# tree costs the supervisor at most a fifth of a core, not all of it.
POLL_COST_FACTOR = 4

Report = Callable[[List[Path]], None]


class FileFilter:
    """Whether a changed path should restart the server (uvicorn's `FileFilter`, plus pruning).

    A path counts when its name matches an include pattern (`PurePath.match`: `*.py`, or
    `templates/*.html` matched from the right) and no exclude pattern, and it is not inside an
    excluded directory: an --reload-exclude entry that is an existing directory, or a directory
    under the watched one whose own name matches an exclude pattern (the default `.*` keeps
    `.git/` and `.venv/` out; uvicorn watches files inside them). An include pattern that is the
    path's whole tail (a file named outright) wins over the excludes, as in uvicorn.
    """

    def __init__(self, includes: Sequence[str] = (), excludes: Sequence[str] = ()) -> None:
        self.includes = _unique([p for p in DEFAULT_INCLUDES if p not in excludes] + list(includes))
        self.exclude_dirs: List[Path] = []
        patterns = [p for p in DEFAULT_EXCLUDES if p not in includes]
        for entry in excludes:
            if os.path.isdir(entry):
                self.exclude_dirs.append(Path(entry).resolve())
            else:
                patterns.append(entry)
        self.excludes = _unique(patterns)

    def __call__(self, path: Path) -> bool:
        for pattern in self.includes:
            if path.match(pattern):
                if str(path).endswith(pattern):  # the file itself, named outright
                    return True
                if any(directory in path.parents for directory in self.exclude_dirs):
                    return False
                return not any(path.match(exclude) for exclude in self.excludes)
        return False

    def prunes(self, directory: Path, root: Path) -> bool:
        """A directory under the watched `root` that nothing inside of can count."""
        if directory in self.exclude_dirs:
            return True
        relative = directory.relative_to(root) if directory != root else None
        return relative is not None and any(PurePath(relative.name).match(p) for p in self.excludes)

    def counts(self, path: Path, root: Path) -> bool:
        """`path` (under `root`) counts and is in no pruned directory."""
        if not self(path):
            return False
        parent = path.parent
        while parent != root and root in parent.parents:
            if self.prunes(parent, root):
                return False
            parent = parent.parent
        return True


def _unique(items: Iterable[str]) -> List[str]:
    return list(dict.fromkeys(items))


class _WatcherThread:
    """What both watchers share: a daemon thread, a stop event, the directories and the filter."""

    name = "?"

    def __init__(self, directories: Sequence[Path], file_filter: FileFilter, delay: float, report: Report) -> None:
        self.directories = [Path(d).resolve() for d in directories]
        self.filter = file_filter
        self.delay = delay
        self.report = report
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"asgiws-reload-{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5.0)

    def _run(self) -> None:
        try:
            self.watch()
        except Exception:  # noqa: BLE001 - say why reloading stopped, rather than die silently
            logger.exception("The %s file watcher failed: files are no longer watched", self.name)

    def watch(self) -> None:
        raise NotImplementedError

    def _root_of(self, path: Path) -> Optional[Path]:
        for root in self.directories:
            if path == root or root in path.parents:
                return root
        return None

    def _counting(self, paths: Iterable[Path]) -> List[Path]:
        found = []
        for path in paths:
            root = self._root_of(path)
            if root is not None and self.filter.counts(path, root):
                found.append(path)
        return sorted(set(found))


class WatchfilesWatcher(_WatcherThread):
    """Change notifications through watchfiles (inotify on Linux). Raises ImportError without it."""

    name = "watchfiles"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import watchfiles  # noqa: F401 - fail here, in the supervisor, rather than in the thread

        super().__init__(*args, **kwargs)

    def watch(self) -> None:
        import watchfiles

        # watchfiles reports a batch once WATCHFILES_STEP_MS pass without another change (an
        # editor, `git checkout` or a formatter writing many files at once is one batch), and
        # keeps collecting while we wait: the pause of --reload-delay after each batch makes the
        # changes made during it the next batch, so the server restarts at most once per delay.
        for changes in watchfiles.watch(
            *self.directories, watch_filter=None, stop_event=self.stopping, step=WATCHFILES_STEP_MS,
            ignore_permission_denied=True, raise_interrupt=False,
        ):  # fmt: skip
            paths = self._counting(Path(path) for _, path in changes)
            if paths:
                self.report(paths)
                if self.stopping.wait(self.delay):
                    return


class PollingWatcher(_WatcherThread):
    """stat() every file that counts, every --reload-delay (at least POLL_MIN_INTERVAL, and at
    least POLL_COST_FACTOR times as long as the last walk took)."""

    name = "polling"

    def watch(self) -> None:
        known = self.snapshot()
        while True:
            started = time.monotonic()
            current = self.snapshot()
            took = time.monotonic() - started
            changed = [Path(p) for p in set(known) | set(current) if known.get(p) != current.get(p)]
            known = current
            if changed:
                self.report(sorted(changed))
            if self.stopping.wait(max(self.delay, POLL_MIN_INTERVAL, POLL_COST_FACTOR * took)):
                return

    def snapshot(self) -> Dict[str, Tuple[int, int]]:
        """Every file that counts: its path → (modification time in ns, size)."""
        found: Dict[str, Tuple[int, int]] = {}
        for root in self.directories:
            for directory, subdirectories, files in os.walk(root):
                here = Path(directory)
                subdirectories[:] = [d for d in subdirectories if not self.filter.prunes(here / d, root)]
                for name in files:
                    path = here / name
                    if not self.filter(path):
                        continue
                    try:
                        stat = path.stat()
                    except OSError:  # deleted since the directory was listed
                        continue
                    found[str(path)] = (stat.st_mtime_ns, stat.st_size)
        return found


def make_watcher(directories: Sequence[Path], file_filter: FileFilter, delay: float, report: Report) -> _WatcherThread:
    """A WatchfilesWatcher when watchfiles is installed, else a PollingWatcher (with a warning)."""
    try:
        return WatchfilesWatcher(directories, file_filter, delay, report)
    except ImportError:
        interval = max(delay, POLL_MIN_INTERVAL)
        logger.warning("watchfiles is not installed: looking for changed files every %gs by polling instead "
                       "(pip install 'asgiws[reload]' for change notifications)", interval)  # fmt: skip
        return PollingWatcher(directories, file_filter, delay, report)
