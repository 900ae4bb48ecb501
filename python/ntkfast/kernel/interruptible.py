"""Backend calls that Ctrl-C stops within a tile, with a live pairs-done counter.

A compiled call (``_core.gram_tile``, ``GramSession.tile``, ``_core.gram_pairs``) releases the GIL and runs
for as long as its tile takes (minutes for a large tile of a pooled net). Python delivers KeyboardInterrupt
only to the main thread and only between bytecodes, so a call made directly from the main thread would
ignore Ctrl-C until the tile ends. :func:`call` runs the backend call in a worker thread with a
``_core.RunControl`` and waits for it in short slices: a KeyboardInterrupt sets the control's cancel flag
(the backends check it between pairs), the worker returns within a few pairs, and the KeyboardInterrupt goes
on to the caller, which keeps what was finished (stores keep their finished tiles). The same slices read the
control's pairs-done counter for progress bars inside a tile.

Off the main thread (a Dask worker, a thread of the user's) there is no KeyboardInterrupt to wait for: the
call runs directly on the calling thread.
"""
from __future__ import annotations

import threading

__all__ = ["call"]

POLL_S = 0.1   # the wait slice: the longest Ctrl-C waits before the cancel flag is set, and the progress period


def call(fn, *args, progress=None):
    """``fn(*args, control)`` with Ctrl-C honoured within the call; returns what ``fn`` returns.

    ``fn`` : a backend function whose last argument is a ``_core.RunControl`` (or None).
    ``progress`` : None, or a callable given the pairs done so far in this call (an int, monotone), about
        every ``POLL_S`` seconds while the call runs.
    Raises what ``fn`` raises; KeyboardInterrupt when interrupted (after the backend has stopped).
    """
    from .. import _core
    control = _core.RunControl()
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, control)
    box = {}
    # Completion is an Event set by the worker, not Thread.join()/is_alive(): a KeyboardInterrupt that lands
    # inside Thread.join can leave the Thread object reporting "not alive" while the thread still runs (seen on
    # CPython 3.11), and a process that exits while a thread is inside the backend aborts in C++ ("terminate
    # called without an active exception").
    done = threading.Event()

    def work():
        try:
            box["result"] = fn(*args, control)
        except BaseException as e:   # handed to the waiting thread, which raises it
            box["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=work, name="ntkfast-backend", daemon=True)
    worker.start()
    try:
        while not done.wait(POLL_S):
            if progress is not None:
                progress(control.progress)
        if progress is not None:          # the final count, also for calls shorter than one slice
            progress(control.progress)
    except KeyboardInterrupt:
        control.cancel()
        # the backend checks the flag between pairs; a second Ctrl-C while it winds down is ignored so that
        # the caller never goes on (or exits) while the backend still runs
        while not done.is_set():
            try:
                done.wait()
            except KeyboardInterrupt:
                pass
        raise
    finally:
        if done.is_set():
            worker.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
