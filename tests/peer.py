"""neural-tangents (the peer) in a worker process, behind a stand-in for its ``stax`` module.

Tests write nets against ``stax`` as they would against ``neural_tangents.stax``: ``stax.serial(stax.Conv(1,
(3, 3), padding='SAME'), stax.Relu(), ...)[2](X, None, get=('nngp', 'ntk'))``. Here every layer call only
records its name and arguments; calling the kernel function sends the recorded net and the inputs to a worker
process, which builds the same net with the real ``stax`` (jax, float64) and returns its kernels as numpy
arrays: a namedtuple with the requested fields for a tuple ``get``, an array for one name.

Why a process: the peer's XLA CPU runtime crashes now and then with SIGSEGV inside its own compiled
convolution kernels (``convolution_kernel`` under ``xla::cpu::Worker::Parallelize``, jax 0.10 on this
machine's CPUs), which took the whole test run down with it. A crashed worker is restarted and the call
retried once; a second crash fails the test with the worker's last words. jax's warnings stay in the worker.

``stax_or_skip()`` returns the stand-in, or skips the calling test when jax, neural-tangents or the import
shim at ../shared/peers is missing. The worker runs this interpreter, or ``NTKFAST_PEER_PYTHON`` when set (a
Python that has jax and neural-tangents, e.g. a separate virtual environment).
"""
import atexit
import collections
import os
import pickle
import struct
import subprocess
import sys

import pytest

PEERS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
# the worker's interpreter: this one, or one that has jax and neural-tangents (NTKFAST_PEER_PYTHON)
PYTHON = os.environ.get("NTKFAST_PEER_PYTHON") or sys.executable


# ---- the recording stand-in (test process) -------------------------------------------------------------------

class Net(tuple):
    """What a stax layer call returns: (init_fn, apply_fn, kernel_fn) with only kernel_fn usable here."""

    def __new__(cls, name, args, kwargs, worker):
        self = super().__new__(cls, (None, None, KernelFn(None, worker)))
        self.spec = (name, args, kwargs)
        self[2].spec = self.spec
        return self


class KernelFn:
    def __init__(self, spec, worker):
        self.spec, self.worker = spec, worker

    def __call__(self, x1, x2=None, get=None, **kwargs):
        return self.worker.call(self.spec, x1, x2, get, kwargs)


class Stax:
    """A stand-in for ``neural_tangents.stax``: any attribute is a layer constructor that records its call."""

    def __init__(self, worker):
        self._worker = worker

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: Net(name, _specs(args), _specs(kwargs), self._worker)


def _specs(obj):
    """Arguments with recorded nets replaced by their specs (picklable)."""
    if isinstance(obj, Net):
        return ("__net__", obj.spec)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_specs(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _specs(v) for k, v in obj.items()}
    return obj


# ---- the worker process --------------------------------------------------------------------------------------

def _send(f, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)) + data)
    f.flush()


def _recv(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(f.read(n))


class Worker:
    def __init__(self):
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([PYTHON, "-u", os.path.abspath(__file__), "--worker", PEERS],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return _recv(self.proc.stdout)          # ('ready', None) or ('unavailable', why)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                f.close()
            self.proc = None

    def call(self, spec, x1, x2, get, kwargs):
        for attempt in (1, 2):
            if self.proc is None:
                self.start()
            try:
                _send(self.proc.stdin, (spec, x1, x2, get, kwargs))
                status, value = _recv(self.proc.stdout)
            except (EOFError, BrokenPipeError):
                self.proc.wait()
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                code = self.proc.returncode
                self.stop()
                if attempt == 2:
                    raise RuntimeError(f"the neural-tangents worker died twice (exit {code}):\n{err}")
                continue
            if status == "error":
                raise RuntimeError(f"neural-tangents raised: {value}")
            if isinstance(value, dict):
                return collections.namedtuple("Kernel", list(value))(**value)
            return value


_WORKER = None
_UNAVAILABLE = None


def stax_or_skip():
    """The stand-in ``stax`` backed by a (shared) worker; skips when the peer is not importable (found out once
    per test run)."""
    global _WORKER, _UNAVAILABLE
    if _WORKER is None and _UNAVAILABLE is None:
        if not os.path.isfile(os.path.join(PEERS, "nt_shim.py")):
            _UNAVAILABLE = "no neural-tangents import shim at ../shared/peers"
        else:
            w = Worker()
            try:
                status, why = w.start()
            except EOFError:                  # the worker died before it could say (e.g. a crash on import)
                w.proc.wait()
                status, why = "unavailable", w.proc.stderr.read().decode(errors="replace")[-500:]
            if status == "ready":
                _WORKER = w
                atexit.register(w.stop)
            else:
                w.stop()
                _UNAVAILABLE = f"neural-tangents not importable: {why}"
    if _UNAVAILABLE is not None:
        pytest.skip(_UNAVAILABLE)
    return Stax(_WORKER)


def _build(stax, spec):
    name, args, kwargs = spec

    def real(o):
        if isinstance(o, tuple) and len(o) == 2 and o[0] == "__net__":
            return _build(stax, o[1])
        if isinstance(o, (list, tuple)):
            return type(o)(real(v) for v in o)
        if isinstance(o, dict):
            return {k: real(v) for k, v in o.items()}
        return o

    return getattr(stax, name)(*real(args), **real(kwargs))


def _serve(peers):
    import warnings
    warnings.simplefilter("ignore")
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr                    # stray prints must not corrupt the frames
    try:
        sys.path.insert(0, peers)
        import nt_shim  # noqa: F401  (before neural_tangents)
        from neural_tangents import stax
        import jax
        import numpy as np
        jax.config.update("jax_enable_x64", True)
    except Exception as e:  # not installed, or an incompatible JAX
        _send(out, ("unavailable", repr(e)))
        return
    _send(out, ("ready", None))
    while True:
        try:
            spec, x1, x2, get, kwargs = _recv(inp)
        except EOFError:
            return
        try:
            k = _build(stax, spec)[2](x1, x2, get, **kwargs)
            if hasattr(k, "_fields"):
                value = {f: np.asarray(getattr(k, f)) for f in k._fields if getattr(k, f) is not None}
            else:
                value = np.asarray(k)
            _send(out, ("ok", value))
        except Exception as e:
            _send(out, ("error", repr(e)))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _serve(sys.argv[2])
