"""Safe outputs: every file or folder adaptk writes goes through here, so no command ever deletes or
replaces what the user owns.

Folder outputs (a report, a bench result, a training run)
    A folder is written only if it is new, empty, or already an adaptk output folder of the same
    kind, recognised by the marker file ``.adaptk-output.json`` that the writer puts there
    (``{"format": "adaptk-output", "kind": ..., "files": [...]}``, the files adaptk wrote). In such a
    folder adaptk replaces only the files it writes and removes only files its marker lists from a
    previous write that the new write no longer produces. Any other folder (or an adaptk folder of
    another kind) is refused with :class:`OutputExistsError` naming the path and ``--overwrite``.
    With ``overwrite=True`` adaptk writes its files into such a folder, replacing same-named files
    only and deleting nothing else; in a foreign folder it then writes its marker, in another kind's
    adaptk folder it leaves that marker as it is (so the other kind's files stay tracked).
    Some kinds (a training run, which holds a model) set ``reuse_own=False``: even their own folder
    needs ``overwrite=True``. A folder an adaptk before the marker wrote counts as its own when a
    recogniser registered for the kind (:func:`register_legacy`) finds nothing but that kind's files.

    Each file is first written in full into a staging folder ``.adaptk-tmp-<host>-<pid>-<random>``
    inside the target folder (same file system), then renamed into place one by one. A failure
    while writing (disk full, an exception, Ctrl-C) leaves the target exactly as it was; only the
    renames, which cannot run out of space, are not all-or-nothing. The marker is first written
    listing the old and the new files together, so even a kill among the renames leaves every file
    adaptk wrote recognisable as adaptk's.

Single-file outputs (a policy file, a routing baseline)
    An existing file is replaced only if ``is_own(path)`` recognises it by its content as an adaptk
    file of the same kind, or with ``overwrite=True``. The data goes to a temp file
    ``.<name>.adaptk-tmp-<host>-<pid>-<random>`` in the same folder, which is then renamed over the
    target: never a partial file. A folder where a file is expected, or a file where a folder is
    expected, is always refused.

Stale temp entries
    A write killed with SIGKILL leaves its temp entry behind. The next write to the same target
    removes the entries named like adaptk's own temps whose writer is gone: the name carries the
    host (a short hash) and the PID, and an entry is stale when it was made on this host by a PID
    that is no longer alive (a PID reused by an unrelated process only keeps the entry longer; it
    never deletes a live write), or, from another host (a shared file system, where the PID cannot
    be checked), when it is older than a day. Entries of older adaptk versions, which carry no PID
    (``.NAME.tmp-XXXXXXXX`` folders next to a report, ``.adaptk-XXXXXXXX.json`` next to a policy
    file), are removed when older than an hour: no write takes that long.

``check_folder`` / ``check_file`` validate a destination (kind, marker, existing entries, a parent
that can be created and written) without writing anything; commands call them before any model
loading or long computation. This package uses only the standard library and :mod:`adaptk.errors`.
"""

from adaptk.outputs.checks import (
    MARKER,
    MARKER_FORMAT,
    MARKER_VERSION,
    OutputError,
    OutputExistsError,
    check_file,
    check_folder,
    entries_are,
    folder_state,
    json_is_own,
    read_marker,
    register_legacy,
)
from adaptk.outputs.temps import FOREIGN_HOST_STALE_S, LEGACY_STALE_S, TMP_TAG, clean_stale_temps
from adaptk.outputs.write import finish_folder, prepare_folder, snapshot, write_file, write_folder, write_marker

__all__ = [
    "FOREIGN_HOST_STALE_S", "LEGACY_STALE_S", "MARKER", "MARKER_FORMAT", "MARKER_VERSION", "TMP_TAG",
    "OutputError", "OutputExistsError", "check_file", "check_folder", "clean_stale_temps", "entries_are",
    "finish_folder", "folder_state", "json_is_own", "prepare_folder", "read_marker", "register_legacy",
    "snapshot", "write_file", "write_folder", "write_marker",
]
