"""The Engine protocol is the whole interface between the Thermometer (with its FrameReference) and an engine.

- every engine defines every protocol member, with the protocol's parameter names (static, no GPU);
- FrameReference and Thermometer name no engine attribute outside the protocol (static, over their source);
- the Thermometer runs every reference mode, with and without motion registration, saves and resumes, on an
  engine behind a proxy that exposes only the protocol's members (AttributeError on anything else);
- where cudacpu sits beside the checkout (../shared/tools/cudacpu): the fused CUDA engine, unmodified, on the CPU
  behind the same proxy, against the array engine -- its protocol reads of its own buffers (fit inputs, drift
  region, changed flags, accumulators) voxel for voxel, and the Thermometer in every reference mode on a breathing
  phantom (temperature within 1e-4 C, dose within 1e-4 relative, the same voxels measured, the same entries).
"""

import ast
import inspect
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import cudacpu_available

import mrtherm
from mrtherm.thermometry import thermometer as thermometer_module
from mrtherm.thermometry.engine import ArrayEngine, Engine, protocol_members
from breathing_phantoms import make_breathing_exam

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDACPU = ROOT.parent / "shared" / "tools" / "cudacpu"
MEMBERS = frozenset(protocol_members())
CALLERS = ("mrtherm/thermometry/thermometer.py", "mrtherm/thermometry/frame_reference.py")


class ProtocolOnly:
    """An engine seen only through the Engine protocol: other attributes raise AttributeError; reads are recorded."""

    def __init__(self, engine):
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "used", set())

    def __getattr__(self, name):
        if name not in MEMBERS:
            raise AttributeError(f"{name!r} is not a member of the Engine protocol")
        self.used.add(name)
        return getattr(self._engine, name)

    def __setattr__(self, name, value):
        raise AttributeError(f"the engine's {name!r} is not set through the Engine protocol")


class ProxiedArrayEngine:
    """Stands in for ArrayEngine in the Thermometer: builds one and hands out its protocol-only proxy."""

    name = ArrayEngine.name
    built = []

    def __new__(cls, xp, model, config):
        proxy = ProtocolOnly(ArrayEngine(xp, model, config))
        cls.built.append(proxy)
        return proxy


def _breathing():
    ex = make_breathing_exam(kind="rigid", shape_zyx=(2, 32, 32), voxel_mm=(4.0, 3.0, 3.0), n_baseline=6,
                             n_frames=14, frame_time_s=1.7, supersample=4, heat_fwhm_mm=8.0, sonication_s=10.0, seed=1)
    frames = [(ex.magnitude[t], ex.phase_rad[t], True) for t in range(len(ex.frame_times_s))]
    return ex, frames


# ---------------------------------------------------------------- static: the engines and the callers

@pytest.mark.parametrize("engine_class", ["ArrayEngine", "FusedEngine"])
def test_every_engine_defines_every_protocol_member_with_its_parameters(engine_class):
    if engine_class == "FusedEngine":
        sys.path.insert(0, str(ROOT / "gpu"))
        from mrtherm_gpu.thermometry import FusedEngine as cls  # imports cupy only when built
    else:
        cls = ArrayEngine
    assert {"pass1", "pass2", "fit_inputs", "drift_candidates", "changed_flags", "dose_cem43_min", "tmax_c",
            "measured_frames", "baseline_stats", "name"} <= MEMBERS
    for member in MEMBERS:
        assert hasattr(cls, member), f"{cls.__name__} lacks {member}"
        declared = getattr(Engine, member, None)
        if callable(declared):
            want = [p for p in inspect.signature(declared).parameters if p != "self"]
            got = [p for p in inspect.signature(getattr(cls, member)).parameters if p != "self"]
            assert got == want, (cls.__name__, member, got, want)
    assert isinstance(cls.name, str)


def _engine_attributes(path):
    """``(line, attribute)`` of every ``engine.X`` and ``self.engine.X`` in a source file."""
    out = []
    for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        v = node.value
        if (isinstance(v, ast.Name) and v.id == "engine") or (isinstance(v, ast.Attribute) and v.attr == "engine"):
            out.append((node.lineno, node.attr))
    return out


@pytest.mark.parametrize("path", CALLERS)
def test_the_callers_name_only_protocol_members_of_the_engine(path):
    found = _engine_attributes(path)
    assert found, "the scan finds the engine's uses"
    assert [(line, a) for line, a in found if a not in MEMBERS] == []


# ---------------------------------------------------------------- dynamic: every mode on a protocol-only engine

@pytest.mark.parametrize("mode", ["mean", "library", "hybrid", "referenceless"])
@pytest.mark.parametrize("register", ["auto", "off"])
def test_the_thermometer_runs_every_mode_and_resumes_on_a_protocol_only_engine(mode, register, monkeypatch,
                                                                               tmp_path):
    ex, frames = _breathing()
    monkeypatch.setattr(thermometer_module, "ArrayEngine", ProxiedArrayEngine)
    ProxiedArrayEngine.built.clear()
    params = mrtherm.ThermometryParams(baseline_frames=ex.n_baseline, reference=mode, register_motion=register)
    th = thermometer_module.Thermometer(ex.magnitude.shape[1:], ex.affine, ex.te_s, ex.b0_t, frames[:ex.n_baseline],
                                        params, labels=ex.labels_ref, backend="numpy")
    assert isinstance(th.engine, ProtocolOnly) and isinstance(th.engine, Engine)
    assert (th.registration is not None) == (register == "auto")  # the phantom breathes: motion is detected
    stop = len(frames) - 4
    for t, f in enumerate(frames):
        if t == stop:
            th = thermometer_module.Thermometer.load_state(th.save_state(tmp_path / "s.npz"))
            assert isinstance(th.engine, ProtocolOnly)
        th.update(f, ex.frame_times_s[t])
    maps = [th.dose_cem43_min, th.tmax_c, th.measured_frames, th.temperature_sd_c()]
    assert all(m.shape == ex.magnitude.shape[1:] for m in maps)
    assert np.nanmax(th.tmax_c) > 45.0  # the heat is measured
    used = set().union(*(e.used for e in ProxiedArrayEngine.built))
    assert {"pass1", "pass2", "set_reference", "frame_validity", "state", "restore", "dose_cem43_min", "tmax_c",
            "measured_frames", "baseline_stats"} <= used
    if mode in ("hybrid", "referenceless"):
        assert "fit_inputs" in used  # the sparse background fit reads the engine's phase change
    if mode == "referenceless":
        assert {"drift_candidates", "changed_flags"} <= used


class _FakeFused(ArrayEngine):
    """The GPU plugin's engine, as far as the Thermometer's choice of engine goes."""

    name = "fused CUDA"


@pytest.mark.parametrize("mode", ["library", "hybrid", "referenceless"])
def test_every_mode_runs_on_the_gpu_plugins_engine_and_an_array_engine_state_resumes_on_its_own(mode, monkeypatch,
                                                                                               tmp_path):
    """On CuPy arrays every reference mode gets the plugin's engine (hybrid and referenceless used to be forced onto
    the array engine); a state that the array engine saved on CuPy still resumes on the array engine."""
    ex, frames = _breathing()

    class Plugin:
        engine_class = _FakeFused

    plugin = [Plugin]
    monkeypatch.setattr(thermometer_module, "is_cupy_namespace", lambda xp: True)
    monkeypatch.setattr(thermometer_module, "gpu_plugin", lambda: plugin[0])
    params = mrtherm.ThermometryParams(baseline_frames=ex.n_baseline, reference=mode)
    shape = ex.magnitude.shape[1:]
    th = thermometer_module.Thermometer(shape, ex.affine, ex.te_s, ex.b0_t, frames[:ex.n_baseline], params,
                                        labels=ex.labels_ref, backend="numpy")
    assert type(th.engine) is _FakeFused
    th.update(frames[0], ex.frame_times_s[0])
    assert type(thermometer_module.Thermometer.load_state(th.save_state(tmp_path / "f.npz")).engine) is _FakeFused
    plugin[0] = None  # an older run: the array engine on CuPy
    old = thermometer_module.Thermometer(shape, ex.affine, ex.te_s, ex.b0_t, frames[:ex.n_baseline], params,
                                         labels=ex.labels_ref, backend="numpy")
    old.update(frames[0], ex.frame_times_s[0])
    path = old.save_state(tmp_path / "a.npz")
    plugin[0] = Plugin
    assert type(thermometer_module.Thermometer.load_state(path).engine) is ArrayEngine


def test_a_wrong_attribute_on_the_proxy_fails():
    proxy = ProtocolOnly(object())
    with pytest.raises(AttributeError, match="not a member of the Engine protocol"):
        proxy.ref  # noqa: B018 - the access is the test
    with pytest.raises(AttributeError):
        proxy.changed = None


# ---------------------------------------------------------------- the fused engine on the CPU (cudacpu)

FUSED_DRIVER = r'''
import json, sys
cudacpu, root, modes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path[:0] = [cudacpu + "/fakecupy", cudacpu, root + "/tests", root + "/gpu"]
import numpy as np
import cupy as cp  # cudacpu's fakecupy: NumPy memory, kernels compiled for the CPU
def host(x):
    return x.view(np.ndarray) if isinstance(x, cp.ndarray) else x
for name in ("isfinite", "where", "abs"):  # the CuPy functions the fused engine's protocol reads use
    if not hasattr(cp, name):
        setattr(cp, name, lambda *a, f=getattr(np, name): np.asarray(f(*[host(x) for x in a])).view(cp.ndarray))
import mrtherm
from mrtherm.thermometry import thermometer as thermo
from mrtherm.thermometry.drift import DriftModel, solve_drift
from mrtherm.thermometry.engine import ArrayEngine, EngineConfig
from mrtherm_gpu.thermometry import FusedEngine
from test_engine_protocol import ProtocolOnly, _breathing

def engine_reads():
    """Both engines on the same frames (dark patches: invalid, re-anchored): their protocol reads compared."""
    out = {"u": 0.0, "weight_mismatch": 0, "changed_mismatch": 0, "count_mismatch": 0, "measured_mismatch": 0,
           "sums": 0.0, "dose_rel": 0.0, "weighted_voxels": 0, "changed_voxels": 0, "tmax_none_first": True}
    rng = np.random.default_rng(4)
    shape, nt = (2, 12, 36), 6
    mag = (60 + 40 * rng.random((nt,) + shape)).astype(np.float32)
    yy, xx = np.mgrid[-1:1:12j, -1:1:36j]
    phase = (0.1 * xx - 0.05 * yy)[None, None] * np.arange(1, nt + 1)[:, None, None, None]
    phase = phase + 0.02 * rng.standard_normal(phase.shape)
    phase[3:, :, 4:7, 10:15] -= np.array([0.6, 1.2, 1.8])[:, None, None, None]  # heat: changed voxels
    mag[2:4, :, 5:7, 20:23] = 3.0  # dark in frames 2-3 (below the floor), re-anchored in frame 4
    mag[1, :, 0:2, 30:33] = np.inf  # not finite: no weight
    phase = np.angle(np.exp(1j * phase)).astype(np.float32)
    mask = np.ones(shape, bool)
    mask[:, 0, :] = False
    ref = mask.copy()
    ref[:, 8:11, 0:8] = False  # the heat (changed voxels) lies inside the drift region
    s_ref = (mag[0] * np.exp(1j * phase[0])).astype(np.complex64)
    for polar in (True, False):
        for auto in (True, False):
            cfg = EngineConfig(mask=mask, ref=ref, s_ref=s_ref, auto=auto, outlier_rad=0.5, to_celsius=-8.7,
                               body_temp_c=37.0, heated_c=3.0, valid_floor=10.0, valid_fraction=0.3)
            model = DriftModel(shape, 1, np)
            engines = [ProtocolOnly(ArrayEngine(np, model, cfg)), ProtocolOnly(FusedEngine(None, model, cfg))]
            for e in engines:
                out["tmax_none_first"] &= e.tmax_c() is None
            for t in range(nt):
                if polar:
                    a, b = mag[t], phase[t]
                else:
                    s = (mag[t] * np.exp(1j * phase[t].astype(np.float64))).astype(np.complex64)
                    a, b = np.real(s).copy(), np.imag(s).copy()
                reads = []
                for e in engines:
                    stats = e.pass1(a, b, polar)
                    u, w = (np.array(host(v), dtype=np.float64) for v in e.fit_inputs())
                    coeffs, _ = solve_drift(*stats, model.k)
                    e.pass2(coeffs, None if t == 0 else 0.05, t < 2)
                    reads.append((u, w) + tuple(np.array(host(v)) for v in (
                        e.changed_flags(), e.drift_candidates(), e.measured_frames(), e.dose_cem43_min(),
                        *e.baseline_stats())))
                (ua, wa, ca, ra, ma, da, sa, qa, na), (ub, wb, cb, rb, mb, db, sb, qb, nb) = reads
                used = wa > 0
                out["u"] = max(out["u"], float(np.max(np.abs(ua - ub)[used], initial=0.0)))
                out["weight_mismatch"] += int(np.sum(wa != wb))
                out["weighted_voxels"] += int(np.sum(used))
                out["changed_mismatch"] += int(np.sum(ca != cb)) + int(np.sum(ra != rb)) + int(np.sum(ra != ref))
                out["changed_voxels"] += int(np.sum(ca))
                out["measured_mismatch"] += int(np.sum(ma != mb))
                out["count_mismatch"] += int(np.sum(na != nb))
                out["sums"] = max(out["sums"], float(np.max(np.abs(sa - sb))), float(np.max(np.abs(qa - qb))))
                out["dose_rel"] = max(out["dose_rel"], float(np.max(np.abs(da - db) / np.maximum(da, 1e-9))))
    return out

class Plugin:
    @staticmethod
    def engine_class(xp, model, config):
        return ProtocolOnly(FusedEngine(xp, model, config))

def thermometer_runs():
    ex, frames = _breathing()
    out = {}
    for mode in modes:
        res = {}
        for kind in ("array", "fused"):
            thermo.gpu_plugin = (lambda: Plugin) if kind == "fused" else (lambda: None)
            thermo.is_cupy_namespace = lambda xp, kind=kind: kind == "fused"
            params = mrtherm.ThermometryParams(baseline_frames=ex.n_baseline, reference=mode)
            th = thermo.Thermometer(ex.magnitude.shape[1:], ex.affine, ex.te_s, ex.b0_t, frames[:ex.n_baseline],
                                    params, labels=ex.labels_ref, backend="numpy")
            temps = np.stack([np.array(host(th.update(f, t))) for f, t in zip(frames, ex.frame_times_s)])
            rep = th.frame_reference.report() if th.frame_reference is not None else {}
            res[kind] = dict(engine=th.engine.name, temps=temps, dose=np.array(host(th.dose_cem43_min)),
                             sd=np.array(host(th.temperature_sd_c())), tmax=np.array(host(th.tmax_c)),
                             choices=[rep.get("entries_per_frame"), rep.get("referenceless_frames")],
                             registered=th.registration is not None)
        a, b = res["array"], res["fused"]
        ok = np.isfinite(a["temps"])
        out[mode] = dict(engines=[a["engine"], b["engine"]], registered=a["registered"],
                         finite_mismatch=int(np.sum(ok != np.isfinite(b["temps"]))),
                         temperature=float(np.nanmax(np.abs(a["temps"] - b["temps"]))),
                         tmax=float(np.nanmax(np.abs(a["tmax"] - b["tmax"]))),
                         sd=float(np.nanmax(np.abs(a["sd"] - b["sd"]))),
                         dose_rel=float(np.nanmax(np.abs(a["dose"] - b["dose"]) / np.maximum(a["dose"], 1e-8))),
                         same_choices=a["choices"] == b["choices"], peak=float(np.nanmax(a["tmax"])))
    return out

print(json.dumps({"reads": engine_reads(), "runs": thermometer_runs()}))
'''


@pytest.mark.skipif(not cudacpu_available(), reason="cudacpu not beside the checkout")
def test_the_fused_engine_on_the_cpu_serves_every_reference_mode_as_the_array_engine():
    modes = ("mean", "library", "hybrid", "referenceless")
    run = subprocess.run([sys.executable, "-c", FUSED_DRIVER, str(CUDACPU), str(ROOT), ",".join(modes)],
                         capture_output=True, text=True, timeout=600, cwd=str(ROOT),
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    d = json.loads(run.stdout.strip().splitlines()[-1])
    r = d["reads"]
    assert r["weighted_voxels"] > 0 and r["changed_voxels"] > 0 and r["tmax_none_first"], r
    assert r["weight_mismatch"] == 0 and r["changed_mismatch"] == 0, r  # the same |S|^2 on the same voxels
    assert r["measured_mismatch"] == 0 and r["count_mismatch"] == 0, r
    assert r["u"] < 1e-5 and r["sums"] < 1e-3 and r["dose_rel"] < 1e-4, r
    for mode in modes:
        m = d["runs"][mode]
        assert m["engines"] == [ArrayEngine.name, "fused CUDA"] and m["registered"], (mode, m)
        assert m["finite_mismatch"] == 0 and m["same_choices"], (mode, m)
        assert m["temperature"] < 1e-4 and m["tmax"] < 1e-4 and m["sd"] < 1e-4 and m["dose_rel"] < 1e-4, (mode, m)
        assert m["peak"] > 45.0, (mode, m)
