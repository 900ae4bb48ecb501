"""The core command line: info, gram, bench; and show_config's two-part report."""
import json
import subprocess
import sys

import numpy as np
import pytest

import ntkfast as nf
from ntkfast.cli import main


def test_show_config_separates_compiled_from_usable(capsys):
    cfg = nf.show_config()
    out = capsys.readouterr().out
    assert "compiled in:" in out and "usable now:" in out
    assert cfg["compiled"]["cpu_backend"] is True
    assert isinstance(cfg["compiled"]["cuda_backend"], bool)
    usable, reason = nf.config.cuda_usable()
    assert cfg["usable_now"]["cuda"] == usable
    if not usable:
        assert reason and reason in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert set(cfg) >= {"version", "compiled", "usable_now"}


def test_gram_command_writes_what_it_computes(tmp_path, capsys):
    out = tmp_path / "k.npz"
    assert main(["gram", "--arch", "gap2", "-n", "12", "--out", str(out), "--dtype", "float64"]) == 0
    text = capsys.readouterr().out
    assert "shape (12, 12)" in text and "pairs/s" in text and "78 pairs" in text
    z = np.load(out)
    from ntkfast import data
    X, _ = data.load_default()
    X = data.normalize(X[:12])
    ref = nf.reference.gram(X, arch=nf.presets.cntk(2, "gap"))
    assert np.max(np.abs(z["ntk"] - ref.ntk)) <= 1e-10 * np.max(np.abs(ref.ntk))


def test_gram_command_errors(capsys, tmp_path):
    assert main(["gram", "--arch", "myrtle5", "-n", "4"]) == 2
    assert "pooled too much" in capsys.readouterr().err
    assert main(["gram", "--arch", "nope"]) == 2
    assert "unknown architecture name 'nope'" in capsys.readouterr().err
    assert main(["gram", "--data", str(tmp_path / "missing.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["gram", "--arch", "gap1", "-n", "3", "--out", str(tmp_path / "k.npy")]) == 2
    assert "--out .npy holds one kernel" in capsys.readouterr().err


def test_bench_command(capsys):
    assert main(["bench", "--workloads", "flat5", "--seconds", "0.05"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["workload"] == "flat5" and r["pairs_per_s"] > 0
    assert main(["bench", "--workloads", "gap9"]) == 2


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "ntkfast.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("info", "gram", "bench"):
        assert cmd in r.stdout
