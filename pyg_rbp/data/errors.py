"""The ways loading data can fail that a user must act on, as distinct exception types.

Callers (the CLI, benchmarks, tests) catch these to tell "the files are not here and cannot be
fetched" apart from "the files are here but are not the published ones" and "a file would run
code if loaded", and all apart from ordinary bugs.
"""

from __future__ import annotations


class DataUnavailableError(RuntimeError):
    """Files a dataset needs are missing and may not (or could not) be downloaded.

    The message names the missing files, the folder to put them in and the public source.
    """


class ChecksumError(RuntimeError):
    """A dataset file exists but its sha256 differs from the one in ``pyg_rbp/data/manifest.json``."""


class UnsafeDataError(RuntimeError):
    """A dataset file would run code if unpickled, or cannot be verified to be safe to unpickle.

    The message names the file; it is never unpickled (see :mod:`pyg_rbp.data.safe_load`).
    """
