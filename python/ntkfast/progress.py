"""Progress bars of long computations, counted in the unit of work (pairs of images, or steps).

:class:`PairProgress` counts pairs of a tiled Gram. Today the tiles report when they finish
(:meth:`PairProgress.tile_done`); a backend that counts the pairs done inside a running tile can feed
:meth:`PairProgress.tile_progress` (from a polling thread) and the bar then moves within tiles, with the same
totals: ``tile_done`` only adds what ``tile_progress`` has not reported yet.

:func:`steps` is a plain labelled bar over the steps of an analysis (stability, smoothness).
"""
from __future__ import annotations

import sys
import threading

__all__ = ["PairProgress", "steps", "check_progress", "label_of"]


def check_progress(progress, name="progress"):
    """progress: False/None (no bar), True (a bar with the default label) or a str (a bar with that label)."""
    if progress is None or isinstance(progress, (bool, str)):
        return progress
    raise TypeError(f"{name} must be True, False or a label (str); got {progress!r}")


def label_of(progress, default):
    return progress if isinstance(progress, str) and progress else default


class PairProgress:
    """A tqdm bar over ``total`` pairs (``done`` already finished), with 'tiles a/b' in its postfix.

    Thread-safe: ``tile_progress`` may be called from a thread that polls a backend counter.
    """

    def __init__(self, total, done, tiles_total, tiles_done, desc="gram", file=None):
        from tqdm.auto import tqdm
        self._lock = threading.Lock()
        self.tiles_total, self.tiles_done = int(tiles_total), int(tiles_done)
        self._inflight = 0          # pairs already shown for the tile(s) still running
        self.bar = tqdm(total=int(total), initial=int(done), unit="pair", unit_scale=True, desc=desc,
                        smoothing=0.1, dynamic_ncols=True, file=file if file is not None else sys.stderr)
        self._postfix()

    def _postfix(self):
        self.bar.set_postfix_str(f"tiles {self.tiles_done}/{self.tiles_total}", refresh=False)

    def tile_progress(self, pairs_in_running_tiles):
        """Pairs done so far in the running tile(s) (a backend counter; monotone within a tile)."""
        with self._lock:
            step = int(pairs_in_running_tiles) - self._inflight
            if step > 0:
                self._inflight += step
                self.bar.update(step)

    def tile_done(self, tile_pairs):
        """One tile of ``tile_pairs`` pairs finished (and written)."""
        with self._lock:
            credited = min(self._inflight, int(tile_pairs))
            self._inflight -= credited
            self.tiles_done += 1
            self._postfix()
            self.bar.update(int(tile_pairs) - credited)

    def close(self):
        self.bar.close()


def steps(total, desc, enabled=True, unit="step"):
    """A labelled tqdm bar over ``total`` steps (a no-op object when not ``enabled``)."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=int(total), desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, *a, **k):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
