"""Probe readings against MR thermometry, the probe's own exact CEM43 dose, and its alarms.

MR temperature at a probe: trilinear interpolation of each frame's temperature
at the probe position (world mm through the inverse affine); corners that are
masked (NaN) drop out and the weights of the others are renormalised; with less
than half of the weight measured the sample is NaN. Its uncertainty is the
temperature SD map interpolated the same way.

Comparison on the MR frame times inside the log's span (readings linearly
interpolated there): bias (MR - probe, mean) and RMSE as logged; lag by
cross-correlation -- the shift ``tau`` maximising the Pearson correlation of
``MR(t)`` with ``probe(t + tau)`` over +-min(60 s, a third of the overlap), refined by a
parabola through the peak; ``tau > 0``: the probe reads the same temperature
``tau`` seconds after MR (thermocouple response, clocks). Bias and RMSE are
also given after shifting the probe by ``tau``.

Dose: exact CEM43 of the piecewise-linear reading history
(:func:`mrtherm.thermometry.dose.cem43`). Alarms for watched probes:
temperature >= ``alarm_temperature_c`` (45 C), cumulative dose >=
``alarm_dose_cem43_min`` (1 CEM43), and with ``cold_alarm_c`` a temperature
<= it (cryoablation next to a nerve; no consensus threshold, so it is
configurable).
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.thermometry.dose import cem43, cem43_segment

MAX_LAG_S = 60.0
LAG_STEPS = 1201  # candidate lags across +-max lag


def corners(affine, position_mm, shape_zyx):
    """Corner voxels and trilinear weights of a world position.

    Parameters
    ----------
    affine : (4, 4) array
        Voxel (x, y, z) to world mm.
    position_mm : (3,) array
    shape_zyx : tuple of int

    Returns
    -------
    tuple or None
        ``(start_zyx, weights)``: the lower corner (z, y, x) and a (2, 2, 2) weight block in (z, y, x) order;
        None outside the grid.

    Examples
    --------
    >>> import numpy as np
    >>> start, w = corners(np.eye(4), [1.25, 0.0, 0.0], (1, 1, 4))
    >>> start, float(w[0, 0, 0]), float(w[0, 0, 1])
    ((0, 0, 1), 0.75, 0.25)
    """
    ijk = (np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.append(np.asarray(position_mm, float), 1.0))[:3]
    zyx = ijk[::-1]
    start, frac = [], []
    for c, n in zip(zyx, shape_zyx):
        if not -1e-6 <= c <= n - 1 + 1e-6:
            return None
        lo = min(max(int(math.floor(c)), 0), max(n - 2, 0))
        start.append(lo)
        frac.append(min(max(c - lo, 0.0), 1.0) if n > 1 else 0.0)
    w = np.ones((2, 2, 2))
    for axis, f in enumerate(frac):
        shape = [1, 1, 1]
        shape[axis] = 2
        w = w * np.array([1.0 - f, f]).reshape(shape)
    return tuple(start), w


def interpolate(block, weights):
    """Weighted value of each frame's corner block, finite corners only (see the module docstring).

    Parameters
    ----------
    block : ndarray, shape (t, 2, 2, 2) or (2, 2, 2)
        Corner values (axes z, y, x after time); an axis of one voxel repeats.
    weights : ndarray, shape (2, 2, 2)

    Returns
    -------
    ndarray of float64, shape (t,) or ()
    """
    block = np.asarray(block, dtype=np.float64)
    ok = np.isfinite(block)
    w = np.where(ok, weights, 0.0)
    total = w.sum(axis=(-3, -2, -1))
    value = np.where(ok, block, 0.0)
    out = (w * value).sum(axis=(-3, -2, -1)) / np.where(total > 0, total, 1.0)
    return np.where(total >= 0.5, out, np.nan)


def _pad_block(block):
    """A block read at a grid edge (an axis of one voxel) widened to 2 along every spatial axis."""
    for axis in range(block.ndim - 3, block.ndim):
        if block.shape[axis] == 1:
            block = np.concatenate([block, block], axis=axis)
    return block


def sample_volume(volume_zyx, start, weights):
    """Interpolated value of a (z, y, x) map.

    Parameters
    ----------
    volume_zyx : ndarray, shape (z, y, x)
    start : tuple of int
    weights : ndarray, shape (2, 2, 2)

    Returns
    -------
    float
    """
    z, y, x = start
    return float(interpolate(_pad_block(np.asarray(volume_zyx)[z:z + 2, y:y + 2, x:x + 2]), weights))


def sample_series(series, placements):
    """Interpolated value per frame of a temperature series at several probes.

    Parameters
    ----------
    series : ndarray of shape (t, z, y, x), or str
        In memory, or the path of a 4-D NIfTI (x, y, z, t): read once, frame by frame through one open stream
        (a gzip file cannot seek, so a read per probe would gunzip the series once per probe).
    placements : list of (tuple of int, ndarray)
        ``(start, weights)`` per probe, from :func:`corners`.

    Returns
    -------
    list of ndarray of float64, shape (t,)
    """
    if isinstance(series, str):
        import nibabel as nib  # noqa: PLC0415
        proxy = nib.load(series, keep_file_open=True).dataobj
        frames = (np.asarray(proxy[..., t]).T for t in range(proxy.shape[3]))  # (z, y, x) each
        blocks = [[] for _ in placements]
        for frame in frames:
            for out, ((z, y, x), _) in zip(blocks, placements):
                out.append(frame[z:z + 2, y:y + 2, x:x + 2])
        blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
    else:
        blocks = [np.asarray(series[:, z:z + 2, y:y + 2, x:x + 2], dtype=np.float64) for (z, y, x), _ in placements]
    return [interpolate(_pad_block(b), w) for b, (_, w) in zip(blocks, placements)]


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def estimate_lag(mr_times, mr_temp, log_times, log_temp):
    """Lag of the probe behind MR by cross-correlation (see the module docstring).

    Parameters
    ----------
    mr_times, mr_temp : ndarray, shape (n,)
        MR samples (finite).
    log_times, log_temp : ndarray, shape (m,)
        Readings.

    Returns
    -------
    float or None
        s; None with fewer than 4 overlapping samples or a flat curve.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(0.0, 120.0, 3.0)
    >>> mr = 37 + 20 * np.exp(-((t - 50) / 15) ** 2)
    >>> tl = np.arange(0.0, 130.0, 0.5)
    >>> probe = 37 + 20 * np.exp(-((tl - 55) / 15) ** 2)  # 5 s later
    >>> round(estimate_lag(t, mr, tl, probe), 1)
    5.0
    """
    overlap = min(mr_times[-1], log_times[-1]) - max(mr_times[0], log_times[0])
    max_lag = min(MAX_LAG_S, overlap / 3.0)
    if not max_lag > 0:
        return None
    lags = np.linspace(-max_lag, max_lag, LAG_STEPS)
    scores = np.full(lags.size, np.nan)
    for i, tau in enumerate(lags):
        shifted = mr_times + tau
        inside = (shifted >= log_times[0]) & (shifted <= log_times[-1])
        if inside.sum() >= 4:
            scores[i] = _pearson(mr_temp[inside], np.interp(shifted[inside], log_times, log_temp))
    if not np.isfinite(scores).any():
        return None
    k = int(np.nanargmax(scores))
    if 0 < k < lags.size - 1 and np.isfinite(scores[k - 1:k + 2]).all():
        s0, s1, s2 = scores[k - 1:k + 2]
        den = s0 - 2 * s1 + s2
        offset = 0.5 * (s0 - s2) / den if den < 0 else 0.0
        return float(lags[k] + offset * (lags[1] - lags[0]))
    return float(lags[k])


def compare(mr_times, mr_temp, log_times, log_temp):
    """Bias, RMSE and lag of MR against the readings.

    Parameters
    ----------
    mr_times, mr_temp : ndarray, shape (n,)
        MR frame times and the MR temperature at the probe (NaN where not measured).
    log_times, log_temp : ndarray, shape (m,)

    Returns
    -------
    dict
        ``samples``, ``bias_c``, ``rmse_c``, ``lag_s``, ``bias_lag_corrected_c``, ``rmse_lag_corrected_c``
        (None where not computable).
    """
    ok = np.isfinite(mr_temp) & (mr_times >= log_times[0]) & (mr_times <= log_times[-1])
    out = {"samples": int(ok.sum()), "bias_c": None, "rmse_c": None, "lag_s": None,
           "bias_lag_corrected_c": None, "rmse_lag_corrected_c": None}
    if ok.sum() < 2:
        return out
    t, m = mr_times[ok], mr_temp[ok]
    d = m - np.interp(t, log_times, log_temp)
    out.update(bias_c=float(d.mean()), rmse_c=float(np.sqrt(np.mean(d * d))))
    lag = estimate_lag(t, m, log_times, log_temp)
    if lag is not None:
        inside = (t + lag >= log_times[0]) & (t + lag <= log_times[-1])
        dl = m[inside] - np.interp(t[inside] + lag, log_times, log_temp)
        out.update(lag_s=lag, bias_lag_corrected_c=float(dl.mean()) if dl.size else None,
                   rmse_lag_corrected_c=float(np.sqrt(np.mean(dl * dl))) if dl.size else None)
    return out


def probe_alarms(probe, params, cold_alarm_c=None):
    """Alarms of a watched probe from its readings (empty for unwatched probes).

    Parameters
    ----------
    probe : Probe
    params : ThermometryParams
        ``alarm_temperature_c``, ``alarm_dose_cem43_min``.
    cold_alarm_c : float, optional

    Returns
    -------
    list of dict
        report.json alarm entries (``structure`` = ``probe <name>``), the first crossing of each threshold.
    """
    if not probe.watch or probe.times_s.size == 0:
        return []
    t, temp, name = probe.times_s, probe.temperature_c, f"probe {probe.name}"
    out = []
    hot = np.flatnonzero(temp >= params.alarm_temperature_c)
    if hot.size:
        out.append({"structure": name, "quantity": "temperature", "value": float(temp[hot[0]]),
                    "threshold": float(params.alarm_temperature_c), "unit": "C", "time_s": float(t[hot[0]])})
    dose = np.concatenate([[0.0], np.cumsum(cem43_segment(temp[:-1], temp[1:], np.diff(t) / 60.0))])
    over = np.flatnonzero(dose >= params.alarm_dose_cem43_min)
    if over.size:
        out.append({"structure": name, "quantity": "dose", "value": float(dose[over[0]]),
                    "threshold": float(params.alarm_dose_cem43_min), "unit": "CEM43 min", "time_s": float(t[over[0]])})
    if cold_alarm_c is not None:
        cold = np.flatnonzero(temp <= cold_alarm_c)
        if cold.size:
            out.append({"structure": name, "quantity": "temperature", "value": float(temp[cold[0]]),
                        "threshold": float(cold_alarm_c), "unit": "C", "time_s": float(t[cold[0]]),
                        "comparison": "<="})
    return out


def readings_summary(probe):
    """The probe's own figures from its readings.

    Parameters
    ----------
    probe : Probe

    Returns
    -------
    dict
        ``readings``, ``time_span_s``, ``peak_c``, ``min_c``, ``dose_cem43_min`` (exact, piecewise linear).
    """
    t, temp = probe.times_s, probe.temperature_c
    dose = float(cem43(temp, t)) if t.size >= 2 else 0.0
    return {"readings": int(t.size), "time_span_s": [float(t[0]), float(t[-1])] if t.size else None,
            "peak_c": float(temp.max()) if t.size else None, "min_c": float(temp.min()) if t.size else None,
            "dose_cem43_min": dose}
