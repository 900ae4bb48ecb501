"""Output stores of tiled Gram matrices: in-memory arrays, numpy memmaps and zarr arrays, with resume.

A store holds the full (N, M) matrices. For a symmetric Gram only tiles with ``j0 >= i0`` (on or above the
diagonal) are computed; each one is written at ``[i0:i1, j0:j1]`` and its transpose at ``[j0:j1, i0:i1]``,
so the lower triangle is *mirrored on write* and a store reads as the plain full matrix.

Resumable stores (a zarr store on a local or shared filesystem, or a .npy memmap) record what they hold:

- zarr: the attribute ``"ntkfast"`` of the group (stores created from a ``.zarr`` path, holding arrays
  ``nngp`` and/or ``ntk``) or of each given array; memmap: a sidecar ``<file>.ntkfast.json``.
  Fields: format, arch (its repr), dtype, kinds, shape, symmetric, tile, fingerprint of X and Y (BLAKE2b
  of their bytes in ``dtype``, with their shapes).
- one marker file per finished tile, in ``ntkfast_done/`` inside the directory of the store's first array
  (``<store>.zarr/nngp/ntkfast_done/``, or ``ntk/`` for an NTK-only store; zarr lists only the members of a
  group, so it does not see them) or in ``<file>.ntkfast.done/`` beside a memmap, named ``<a>_<b>`` for tile
  row a and tile column b. Older stores kept the markers in ``ntkfast_done/`` at the group's top level (where
  ``zarr`` warns about an unknown object): they are read there and moved into place when the store is
  resumed. A marker is written (to a temporary name, then renamed: atomic on POSIX) only after the
  tile's data has been written (zarr chunk files are themselves written atomically) and, for a memmap,
  flushed. A tile is either written and marked, or recomputed.

Zarr arrays are chunked by tile, so tiles never share a chunk: concurrent writers (Dask workers) never touch
the same file.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..kernel.inputs import Kernels, fingerprint  # noqa: F401  (fingerprint: part of this module's API)

__all__ = ["Store", "open_store", "fingerprint", "check_out_path", "StoreMismatchError", "arch_label", "FORMAT"]

FORMAT = 1
_DONE = "ntkfast_done"


def arch_label(text):
    """A short name for an arch's repr: the preset's name ('gap5', 'bietti_mairal', ...) when it is one, else
    'a custom net of L layers (Conv, ReLU, ...)'."""
    if not isinstance(text, str):
        return repr(text)
    from ..kernel import presets
    for name in _preset_names():
        try:
            if repr(presets.by_name(name)) == text:
                return name
        except (ValueError, TypeError):
            continue
    if not text.startswith("serial("):
        return text[:60]
    layers = [layer.split("(")[0] for layer in _layers_of(text)]
    return f"a custom net of {len(layers)} layers ({', '.join(dict.fromkeys(layers))})"


def _preset_names():
    yield "bietti_mairal"
    for d in (5, 7, 10):
        yield f"myrtle{d}"
    for d in range(1, 21):
        yield f"gap{d}"
        yield f"flat{d}"
        yield f"fc{d}"


_FIELD_WORDS = {"arch": "architecture", "dtype": "dtype", "kinds": "kernels", "shape": "Gram shape",
                "symmetric": "symmetry (X alone or X against Y)", "X": "inputs X", "Y": "inputs Y", "tile": "tile",
                "format": "store format"}


class StoreMismatchError(ValueError):
    """An existing store was started with other arguments than this call's; resuming it is refused.

    ``location``: the store; ``fields``: [(name, stored, now)] for each of arch, dtype, kinds, shape,
    symmetric, X, Y, tile, format that differ. ``str(e)`` speaks Python (argument names); :meth:`for_cli`
    speaks in command-line options.
    """

    def __init__(self, location, fields):
        self.location, self.fields = location, list(fields)
        super().__init__(self._text(cli=False))

    def _what(self):
        parts = []
        for k, old, new in self.fields:
            if k == "arch":
                a, b = arch_label(old), arch_label(new)
                where = ""
                if a == b:                    # two custom nets alike in outline: show the first layer that differs
                    i, a, b = _first_difference(old, new)
                    where = f" (layer {i})"
                parts.append(f"architecture{where}: stored {a}, now {b}")
            elif k in ("X", "Y"):
                parts.append(f"inputs {k}: stored {_fp_words(old)}, now {_fp_words(new)}")
            else:
                parts.append(f"{_FIELD_WORDS.get(k, k)}: stored {old!r}, now {new!r}")
        return "; ".join(parts)

    def _text(self, cli, option="--out"):
        arg = (lambda name, v: f"--{name} {v}") if cli else (lambda name, v: f"{name}={v!r}")
        out = f"{option} {self.location!r}" if cli else f"out={self.location!r}"
        names = [k for k, _, _ in self.fields]
        if names == ["tile"]:
            stored, now = self.fields[0][1], self.fields[0][2]
            how = (f"leave out --tile or pass --tile {stored} to resume" if cli else
                   f"pass tile=None or tile={stored} to resume")
            return f"{arg('tile', now)} differs from the tile {stored} that {out} was started with; {how}"
        hint = (f"Remove it (rm -r {self.location}) or pass another {option} to start afresh" if cli else
                "Remove the store or pass another out")
        return f"{out} was started with other arguments ({self._what()}); refusing to resume it. {hint}"

    def for_cli(self, option="--out"):
        """The same refusal in command-line terms (options, shell commands)."""
        return self._text(cli=True, option=option)


def _layers_of(text):
    """Top-level layer reprs of an arch repr 'serial(A(...), B(...))'."""
    inner = text[len("serial("):-1] if isinstance(text, str) and text.startswith("serial(") else str(text)
    out, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(inner[start:i].strip())
            start = i + 1
    out.append(inner[start:].strip())
    return [x for x in out if x]


def _first_difference(old, new):
    a, b = _layers_of(old), _layers_of(new)
    for i in range(max(len(a), len(b))):
        la = a[i] if i < len(a) else "nothing"
        lb = b[i] if i < len(b) else "nothing"
        if la != lb:
            return i, la, lb
    return "?", str(old)[:80], str(new)[:80]


def _fp_words(fp):
    if not isinstance(fp, str):
        return "none" if fp is None else repr(fp)
    shape, dtype, digest = (fp.split(":") + ["", "", ""])[:3]
    return f"{shape.replace('x', ' x ')} {dtype} (hash {digest[:8]})"


def check_out_path(out, kind, name="out"):
    """Check an output path before any work: its extension (.zarr, .npy with one ``kind``, .npz), that its
    folder exists and is writable, and that an existing path can be resumed or replaced. Returns the path.

    Raises ValueError (or FileNotFoundError for a missing folder) naming ``name``.
    """
    path = os.fspath(out)
    name = f"{name} {path!r}" if name.startswith("--") else f"{name}={path!r}"
    if not path.endswith((".zarr", ".npy", ".npz")):
        raise ValueError(f"{name}: expected a path ending in .zarr (a resumable zarr store), .npy (one kernel, a "
                         "resumable memmap) or .npz (written at the end)")
    if path.endswith(".npy") and kind is None:
        raise ValueError(f"{name}: a .npy file holds one kernel; pass kind='nngp' or 'ntk', or use a "
                         "path ending in .zarr (or .npz) for both")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name}: the folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the folder {folder!r} is not writable")
    if os.path.exists(path):
        if path.endswith(".npz"):
            if os.path.isdir(path) or not os.access(path, os.W_OK):
                raise ValueError(f"{name} exists and cannot be overwritten")
        elif path.endswith(".npy"):
            if not os.path.exists(path + ".ntkfast.json"):
                raise ValueError(f"{name} exists and is not an ntkfast Gram store (no sidecar "
                                 f"{path + '.ntkfast.json'!r}); remove it or pass another path")
        else:
            if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "zarr.json")):
                raise ValueError(f"{name} exists and is not a zarr store; remove it or pass another path")
            if not os.access(path, os.W_OK | os.X_OK):
                raise ValueError(f"{name} exists and is not writable")
    return path


def _atomic_write_text(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _is_zarr_array(a):
    return type(a).__module__.startswith("zarr") and type(a).__name__ == "Array"


def _is_zarr_group(a):
    return type(a).__module__.startswith("zarr") and type(a).__name__ == "Group"


def _local_dir(zarr_obj):
    """Directory of a zarr array/group on a LocalStore, or None for other stores."""
    root = getattr(zarr_obj.store, "root", None)
    if root is None:
        return None
    return os.path.join(str(root), zarr_obj.path) if zarr_obj.path else str(root)


class Store:
    """Where a Gram's tiles go. Create with :func:`open_store`.

    Attributes: ``kind`` ('array', 'memmap' or 'zarr'), ``names`` (kernels held), ``resumable``,
    ``chunks`` ((rows, cols) of a zarr array, else None), ``location`` (path or None).
    """

    def __init__(self, kind, names, arrays=None, paths=None, meta_path=None, done_dir=None, zarr_meta=None,
                 location=None, group=None, legacy_done_dir=None, shape=None, dtype=None):
        self.kind, self.names = kind, tuple(names)
        self._shape, self._dtype = (None if shape is None else tuple(shape)), dtype   # of arrays to create
        self._arrays = arrays            # name -> array (array / zarr); memmaps are opened lazily
        self._paths = paths              # name -> .npy path (memmap)
        self._meta_path = meta_path      # memmap sidecar
        self._zarr_meta = zarr_meta      # zarr objects whose attrs hold the metadata
        self.done_dir = done_dir
        self.legacy_done_dir = legacy_done_dir   # markers of older stores (group top level)
        self.location = location
        self._group = group
        self.resumable = done_dir is not None

    # pickling for Dask: memmaps are reopened where the store lands
    def __getstate__(self):
        d = dict(self.__dict__)
        if self.kind == "memmap":
            d["_arrays"] = None
        return d

    def arrays(self):
        if self._arrays is None:
            self._arrays = {k: np.load(p, mmap_mode="r+") if isinstance(p, str) else
                            np.memmap(p[0], dtype=p[1], mode="r+", shape=tuple(p[2]), offset=p[3])
                            for k, p in self._paths.items()}
        return self._arrays

    @property
    def chunks(self):
        if self.kind != "zarr":
            return None
        return tuple(self.arrays()[self.names[0]].chunks)

    @property
    def existing_chunks(self):
        """(rows, cols) chunk shape of the zarr arrays this store already holds (given, or found in an
        existing group), which every tile must cover whole; None when there are none yet or not zarr."""
        if self.kind != "zarr" or not self._arrays:
            return None
        return tuple(next(iter(self._arrays.values())).chunks)

    @property
    def records_meta(self):
        """Whether the store keeps the metadata of its Gram (arch, dtype, inputs' fingerprints, tile): resumable
        stores and zarr arrays do; in-memory arrays do not."""
        return self.resumable or self.kind == "zarr"

    # metadata -------------------------------------------------------------------------------------------
    def read_meta(self):
        if self.kind == "memmap":
            if not os.path.exists(self._meta_path):
                return None
            with open(self._meta_path) as f:
                return json.load(f)
        if self.kind == "zarr" and self._zarr_meta:
            return self._zarr_meta[0].attrs.get("ntkfast")
        return None

    def write_meta(self, meta):
        if self.kind == "memmap":
            _atomic_write_text(self._meta_path, json.dumps(meta, indent=1))
        elif self.kind == "zarr":
            for z in self._zarr_meta:
                z.attrs["ntkfast"] = meta

    # tiles ----------------------------------------------------------------------------------------------
    def done(self):
        """Set of (a, b) tile-grid indices whose markers exist."""
        if not self.resumable:
            return set()
        out = set()
        for d in (self.done_dir, self.legacy_done_dir):
            if d is None or not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                parts = name.split("_")
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    out.add((int(parts[0]), int(parts[1])))
        return out

    def migrate_markers(self):
        """Move the markers of an older store from the group's top level (where zarr warns about
        them) into the first array's directory; each move is an atomic rename. Returns the number moved."""
        old = self.legacy_done_dir
        if not self.resumable or old is None or not os.path.isdir(old):
            return 0
        os.makedirs(self.done_dir, exist_ok=True)
        moved = 0
        for name in os.listdir(old):
            os.replace(os.path.join(old, name), os.path.join(self.done_dir, name))
            moved += 1
        try:
            os.rmdir(old)
        except OSError:
            pass
        return moved

    def write_tile(self, bounds, results, mirror):
        """Write one tile's results ({name: (i1-i0, j1-j0) array}) and, with ``mirror``, its transpose."""
        (i0, i1), (j0, j1) = bounds
        arrs = self.arrays()
        for name, r in results.items():
            o = arrs[name]
            o[i0:i1, j0:j1] = r
            if mirror:
                o[j0:j1, i0:i1] = r.T
        if self.kind == "memmap":
            for name in results:
                arrs[name].flush()

    def mark(self, a, b, bounds):
        """Record tile (a, b) as finished (after its data is written)."""
        if not self.resumable:
            return
        (i0, i1), (j0, j1) = bounds
        os.makedirs(self.done_dir, exist_ok=True)
        _atomic_write_text(os.path.join(self.done_dir, f"{a}_{b}"), f"{i0} {i1} {j0} {j1}\n")

    def _create_zarr_arrays(self, tile):
        """Create the missing arrays of a zarr group store, chunked (tile, tile), NaN-filled, uncompressed."""
        g = self._group
        for k in self.names:
            if k not in g:
                self._arrays[k] = g.create_array(k, shape=self._shape, chunks=(tile, tile), dtype=self._dtype,
                                                 compressors=None, fill_value=np.nan)
            else:
                self._arrays[k] = g[k]
        return self

    def _attach(self, arrays):
        """Hold ``arrays`` ({name: array}) once they exist (a memmap created on first write)."""
        self._arrays = dict(arrays)
        return self

    def result(self, kind):
        arrs = self.arrays()
        if kind is not None:
            return arrs[kind]
        return Kernels(arrs["nngp"], arrs["ntk"])


def _names(kind):
    return ("nngp", "ntk") if kind is None else (kind,)


def _out_parts(out, kind):
    """{name: object} from ``out`` (one object for a given kind, Kernels for both)."""
    if kind is None:
        if not isinstance(out, Kernels):
            raise TypeError("out must be ntkfast.Kernels(nngp, ntk) of two (N, M) arrays, a zarr group, or a path "
                            f"ending in .zarr when kind is None; got {type(out).__name__}")
        return {"nngp": out.nngp, "ntk": out.ntk}
    return {kind: out}


def open_store(out, kind, shape, dtype):
    """Wrap ``out`` (None, an array, a memmap, zarr arrays/group, or a path ending in .zarr or .npy) as a
    :class:`Store` for an (N, M) Gram of ``dtype``, without creating anything yet (see :meth:`create`).

    Returns (store, create) where ``create(tile)`` makes the missing arrays (chunked by ``tile``) and returns
    the store ready to write; existing paths are opened, not overwritten.
    """
    names = _names(kind)
    n, m = shape
    dt = np.dtype(dtype)
    if out is None:
        arrays = {k: None for k in names}

        def create(tile):
            for k in names:
                arrays[k] = np.empty((n, m), dtype=dt)
            return st
        st = Store("array", names, arrays=arrays)
        return st, create
    if isinstance(out, (str, os.PathLike)):
        path = os.fspath(out)
        if path.endswith(".zarr"):
            return _zarr_path_store(path, names, shape, dt)
        if path.endswith(".npy"):
            if kind is None:
                raise ValueError(f"out={path!r}: a .npy file holds one kernel; pass kind='nngp' or 'ntk', or use a "
                                 "path ending in .zarr for both")
            return _npy_store(path, names, shape, dt)
        raise ValueError(f"out as a path must end with '.zarr' (a zarr store) or '.npy' (a memmap); got {path!r}")
    if _is_zarr_group(out):
        return _zarr_group_store(out, names, shape, dt, location=_local_dir(out))
    parts = _out_parts(out, kind)
    for k, o in parts.items():
        if tuple(getattr(o, "shape", ())) != (n, m):
            raise ValueError(f"out ({k}) must have shape {(n, m)}; got {getattr(o, 'shape', None)}")
    first = parts[names[0]]
    if all(_is_zarr_array(o) for o in parts.values()):
        for k, o in parts.items():
            if np.dtype(o.dtype) != dt:
                raise TypeError(f"out ({k}) must have dtype {dt.name} (the dtype argument); got {o.dtype}")
        d = _local_dir(first)
        st = Store("zarr", names, arrays=parts, zarr_meta=list(parts.values()),
                   done_dir=None if d is None else os.path.join(d, _DONE), location=d)
        return st, lambda tile: st
    if all(isinstance(o, np.memmap) and getattr(o, "filename", None) for o in parts.values()):
        fn = first.filename
        for k, o in parts.items():
            if np.dtype(o.dtype) != dt:
                raise TypeError(f"out ({k}) must have dtype {dt.name} (the dtype argument); got {o.dtype}")
        paths = {k: (o.filename, o.dtype.str, o.shape, int(getattr(o, "offset", 0))) for k, o in parts.items()}
        st = Store("memmap", names, arrays=parts, paths=paths, meta_path=fn + ".ntkfast.json",
                   done_dir=fn + ".ntkfast.done", location=fn)
        return st, lambda tile: st
    st = Store("array", names, arrays=parts)
    return st, lambda tile: st


def _import_zarr(what):
    try:
        import zarr
    except ImportError as e:
        raise ImportError(f"{what} needs zarr >= 3 ({e}); install it: pip install 'zarr>=3' "
                          "(the 'scale' extra: pip install 'ntkfast[scale]')") from None
    return zarr


def _done_dirs(group_dir, names):
    """(marker folder inside the first array's directory, legacy folder at the group's top level)."""
    if group_dir is None:
        return None, None
    return os.path.join(group_dir, names[0], _DONE), os.path.join(group_dir, _DONE)


def _zarr_path_store(path, names, shape, dt):
    zarr = _import_zarr(f"out={path!r}")
    if os.path.exists(path):
        try:
            g = zarr.open_group(path, mode="r+")
        except Exception as e:
            raise ValueError(f"out={path!r} exists and is not a zarr group ({type(e).__name__}: {e}); remove it or "
                             "pass another path") from None
        if "ntkfast" not in g.attrs:
            raise ValueError(f"out={path!r} exists and is not an ntkfast Gram store (no 'ntkfast' attribute); "
                             "remove it or pass another path")
        return _zarr_group_store(g, names, shape, dt, location=path)

    def create(tile):
        g = zarr.open_group(path, mode="a")
        return _zarr_group_store(g, names, shape, dt, location=path)[0]._create_zarr_arrays(tile)
    st = Store("zarr", names, arrays=None, zarr_meta=None, done_dir=_done_dirs(path, names)[0], location=path)
    return st, create


def _zarr_group_store(g, names, shape, dt, location):
    done_dir, legacy = _done_dirs(_local_dir(g), names)
    st = Store("zarr", names, arrays={k: g[k] for k in names if k in g}, zarr_meta=[g],
               done_dir=done_dir, legacy_done_dir=legacy, location=location, group=g, shape=shape, dtype=dt)
    return st, st._create_zarr_arrays


def _npy_store(path, names, shape, dt):
    meta_path, done_dir = path + ".ntkfast.json", path + ".ntkfast.done"
    exists = os.path.exists(path)
    if exists and not os.path.exists(meta_path):
        raise ValueError(f"out={path!r} exists and is not an ntkfast Gram store (no sidecar {meta_path!r}); remove "
                         "it or pass another path")
    st = Store("memmap", names, paths={names[0]: path}, meta_path=meta_path, done_dir=done_dir, location=path)

    def create(tile):
        if not os.path.exists(path):
            np.lib.format.open_memmap(path, mode="w+", dtype=dt, shape=shape).flush()
        a = np.load(path, mmap_mode="r+")
        if a.shape != tuple(shape) or a.dtype != dt:
            raise ValueError(f"out={path!r} holds a {a.dtype} array of shape {a.shape}; expected {dt.name} {tuple(shape)}")
        return st._attach({names[0]: a})
    return st, create
