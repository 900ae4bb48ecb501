"""What the subcommands share: their common options, the plan and estimate printed before a long Gram,
the interrupt hint of a resumable store, output-path checks and image loading."""
from __future__ import annotations

import argparse
import os

from .. import device as D
from ..kernel.inputs import to_nhwc


def device_option(text):
    """argparse type of the --device options: 'auto', 'cpu', 'cuda' or 'cuda:N' (:mod:`ntkfast.device`)."""
    try:
        return D.check(text, "--device")
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device_arg(p, default="auto", help=None):
    """The --device option, as every subcommand that computes kernels has it."""
    p.add_argument("--device", type=device_option, default=default, metavar="auto|cpu|cuda[:N]",
                   help=help or f"where the kernels are computed: auto (a usable GPU, else the CPU), cpu, cuda or "
                                f"cuda:N (default {default})")

def add_data_args(p):
    p.add_argument("--data", default=None,
                   help="'digits' (embedded default: scikit-learn's 8x8 handwritten digits), a directory of "
                        "MNIST-like IDX files, or a .npy/.npz file (images (N, H, W, C), (N, H, W), or "
                        "channels-first with --layout NCHW)")
    p.add_argument("--layout", choices=("NHWC", "NCHW"), default=None,
                   help="axis order of 4-d images in a .npy/.npz file; default NHWC, refusing shapes that look "
                        "channels-first such as (N, 1, 28, 28)")
    p.add_argument("--normalize", choices=("none", "center_scale", "zca"), default="center_scale",
                   help="per-image normalization (default center_scale)")


def add_png_out_arg(p, default):
    """--out: the PNG of an analysis' plot, checked before any work (``check_out_option``)."""
    p.add_argument("--out", default=default, help=f"PNG path of the plot (default {default}); checked before any "
                                                  "work")


def add_analysis_args(p, png):
    """The options an analysis of the kernels ends with: --seed, --device, --dtype (float64 by default),
    --out (the plot) and --progress."""
    p.add_argument("--seed", type=int, default=0)
    add_device_arg(p)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="default float64")
    add_png_out_arg(p, png)
    p.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")


def add_compute_args(p, progress=True):
    add_device_arg(p)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    p.add_argument("--tile", type=int, default=None, help="images per tile side (default: per device)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    if progress:
        p.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")


def check_compute_args(args):
    """Checks of the compute options that need no data (before any loading)."""
    for name in ("tile", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be >= 1; got {v}")


ESTIMATE_MIN_PAIRS = 20000


def print_plan(job, label, indent="  ", estimate=True):
    """Print a job's pairs and tiles and, for a long job (and ``estimate``), the time estimated from a short
    calibration on a few of its pairs. Returns the estimate in seconds (None when not estimated)."""
    done = len(job.tiles) - len(job.pending)
    shape = f"{'upper triangle of ' if job.symmetric else ''}{job.n} x {job.m}"
    line = (f"{indent}{label:<9}: {job.pending_pairs:,} pairs to compute ({shape}), {len(job.pending)} of "
            f"{len(job.tiles)} tiles of {job.tile} images")
    if done:
        line += f" ({done} already done)"
    print(line, flush=True)
    if not job.pending:
        where = f" in {job.store.location}" if job.store.location else ""
        print(f"{indent}{'':<9}  already complete{where}: nothing to compute", flush=True)
        return None
    if job.pending_pairs < ESTIMATE_MIN_PAIRS or not estimate:
        return None
    sec, rate, cal = job.estimate_seconds()
    print(f"{indent}{'estimate':<9}: about {format_seconds(sec)} at {rate:,.0f} pairs/s (measured on {cal:,} "
          f"pairs)", flush=True)
    return sec


def format_seconds(sec):
    if sec < 90:
        return f"{sec:.0f} s" if sec >= 10 else f"{sec:.1f} s"
    if sec < 5400:
        return f"{sec / 60:.0f} min"
    if sec < 2 * 86400:
        return f"{sec / 3600:.1f} h"
    return f"{sec / 86400:.1f} days"


def resume_hint(job, option="--out"):
    """A callable for the CLI's interrupt message of a job writing to a resumable store (else None)."""
    if not job.store.resumable:
        return None

    def hint():
        return (f"the {len(job.store.done())} of {len(job.tiles)} tiles finished are kept in {job.store.location}; "
                "run the same command again to resume")
    return hint


def check_out_option(path, kind, option, exts, gram=True):
    """Check an output option (before loading data): extension in ``exts``, folder exists and writable, and
    for a Gram output (``gram``) an existing store resumable. Returns the path or None."""
    if path is None:
        return None
    if exts and not str(path).lower().endswith(exts):
        raise ValueError(f"{option} must end with {', '.join(exts[:-1])} or {exts[-1]}; got {path!r}" if len(exts) > 1
                         else f"{option} must end with {exts[0]}; got {path!r}")
    if gram:
        from ..storage.store import check_out_path
        return check_out_path(path, kind, option)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{option} {path!r}: the folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path!r} cannot be written (permission denied)")
    return path


def load_images(data, normalize, n=None, default_n=None, layout=None):
    """Images (N, H, W, C) and labels from the --data argument, first n (or default_n for the embedded set)."""
    from .. import data as D
    X, y = D.load(data)
    X = to_nhwc(X, layout, "--data", option="--layout")
    if n is None and (data is None or data == D.DEFAULT_NAME):
        n = default_n
    if n is not None:
        if n < 1:
            raise ValueError(f"--n must be >= 1; got {n}")
        X = X[:n]
        y = None if y is None else y[:n]
    return D.normalize(X, normalize), y

