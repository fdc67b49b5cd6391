"""Frames from a running Micro-Manager acquisition straight into the daemon (optional extra).

* :func:`pycromanager_hook`: an ``image_process_fn`` for ``pycromanager.Acquisition``;
* :func:`attach_pymmcore`: a ``frameReady`` listener for pymmcore-plus cores.
Both forward each frame to the daemon's ingest endpoint without blocking and return at once.
"""

from tcan_live.micromanager.hooks import PycromanagerHook, attach_pymmcore, pycromanager_hook

__all__ = ["PycromanagerHook", "attach_pymmcore", "pycromanager_hook"]
