"""The two ways loading data can fail that a user must act on, as distinct exception types.

Callers (the CLI, benchmarks, tests) catch these to tell "the files are not here and cannot be
fetched" apart from "the files are here but are not the published ones", and both apart from
ordinary bugs.
"""

from __future__ import annotations


class DataUnavailableError(RuntimeError):
    """Files a dataset needs are missing and may not (or could not) be downloaded.

    The message names the missing files, the folder to put them in and the public source.
    """


class ChecksumError(RuntimeError):
    """A dataset file exists but its sha256 differs from the one in ``pyg_rbp/data/manifest.json``."""
