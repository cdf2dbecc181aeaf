"""Report figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import os

import numpy as np


def new_figure(figsize, dpi=110):
    """A matplotlib ``Figure`` and its one ``Axes``, outside pyplot.

    No pyplot: no global figure registry to close, no GUI backend chosen, safe in a worker thread (matplotlib's
    advice for servers); ``savefig`` to PNG renders with Agg.

    Parameters
    ----------
    figsize : tuple of float
        (width, height), inches.
    dpi : int, optional

    Returns
    -------
    tuple
        (Figure, Axes).
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 -- 0.4 s of import, only when figures are drawn
    fig = Figure(figsize=figsize, dpi=dpi)
    # fixed margins in inches (tick labels, axis labels, title) instead of tight_layout, which draws the whole
    # figure once more to measure them: a third of each figure's time
    width_in, height_in = figsize
    fig.subplots_adjust(left=0.8 / width_in, right=1 - 0.2 / width_in, bottom=0.6 / height_in,
                        top=1 - 0.4 / height_in)
    return fig, fig.subplots()


def _axis_aligned(affine) -> bool:
    """True when a grid's rows and columns run along the world x and y axes."""
    a = np.asarray(affine, float)
    return bool(np.allclose(a[:2, :2], np.diag(np.diag(a[:2, :2]))) and np.allclose(a[:2, 2], 0))


def slice_extent_mm(affine, shape_yx):
    """imshow ``extent`` (left, right, bottom, top) of one slice in mm, voxel edges included.

    World x and y of the slice's corners for grids whose rows and columns run along the world axes
    (the usual axial acquisition); for oblique grids the in-plane distances from the grid corner.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        NIfTI voxel (i, j, k) -> RAS+ mm.
    shape_yx : tuple of int
        (rows, columns) of the slice.

    Returns
    -------
    tuple of float
    """
    a = np.asarray(affine, float)
    ny, nx = shape_yx
    if _axis_aligned(a):
        x0, y0 = a[0, 3] - 0.5 * a[0, 0], a[1, 3] - 0.5 * a[1, 1]
        return (x0, x0 + nx * a[0, 0], y0, y0 + ny * a[1, 1])
    dx, dy = np.linalg.norm(a[:3, 0]), np.linalg.norm(a[:3, 1])
    return (0.0, nx * dx, 0.0, ny * dy)


def show_slice(ax, image_yx, affine, **imshow_kwargs):
    """Draw one (y, x) slice on ``ax`` with axes in mm; returns the AxesImage (for a colour bar).

    Parameters
    ----------
    ax : matplotlib Axes
    image_yx : ndarray, shape (y, x)
    affine : ndarray, shape (4, 4)
        NIfTI affine of the volume the slice comes from.
    **imshow_kwargs
        Passed to ``imshow`` (cmap, vmin, vmax, alpha, ...).

    Returns
    -------
    matplotlib.image.AxesImage
        For a colour bar.
    """
    oblique = not _axis_aligned(affine)
    im = ax.imshow(image_yx, origin="lower", extent=slice_extent_mm(affine, np.shape(image_yx)), **imshow_kwargs)
    ax.set_xlabel("in-plane x (mm from grid corner)" if oblique else "x (mm, RAS)")
    ax.set_ylabel("in-plane y (mm from grid corner)" if oblique else "y (mm, RAS)")
    return im


def tmax_dose_figure(path, anatomy, tmax_c, dose, levels, slice_index, body_temp_c, title="", affine=None):
    """Max-temperature map over the magnitude image with CEM43 contours, one slice.

    Parameters
    ----------
    path : str
        PNG to write.
    anatomy : ndarray, shape (z, y, x)
        Background (mean baseline magnitude).
    tmax_c : ndarray, shape (z, y, x)
        Max temperature, C; drawn where >= body temperature + 3 C.
    dose : ndarray, shape (z, y, x)
        CEM43, min.
    levels : sequence of float
        Dose contour levels, CEM43 min (legend entries).
    slice_index : int
        Slice drawn.
    body_temp_c : float
        Lower end of the colour bar, C.
    title : str, optional
    affine : ndarray, shape (4, 4), optional
        NIfTI affine: axes in mm (voxel units without it).
    """
    fig, ax = new_figure(figsize=(6.4, 5.6))
    aff = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    show_slice(ax, anatomy[slice_index], aff, cmap="gray")
    t = np.ma.masked_invalid(np.where(tmax_c[slice_index] >= body_temp_c + 3.0, tmax_c[slice_index], np.nan))
    im = show_slice(ax, t, aff, cmap="inferno", vmin=body_temp_c, vmax=max(90.0, float(np.nanmax(tmax_c))),
                    alpha=0.85)
    d = np.nan_to_num(dose[slice_index], nan=0.0)
    colours = ["#00e5ff", "#7CFC00", "#ffff00", "#ff8c00", "#ff00ff"]
    extent = slice_extent_mm(aff, d.shape)
    for i, lev in enumerate(levels):
        if d.max() >= lev:
            ax.contour(d, levels=[lev], colors=[colours[i % len(colours)]], linewidths=1.3, origin="lower",
                       extent=extent)
            ax.plot([], [], color=colours[i % len(colours)], label=f"{lev:g} CEM43 min")
    if any(d.max() >= lev for lev in levels):
        ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
    fig.colorbar(im, ax=ax, label="Tmax (°C)", shrink=0.8)
    ax.set_title(title or f"Tmax and dose contours, slice {slice_index}")
    if affine is None:
        ax.set_xlabel("x (voxel)")
        ax.set_ylabel("y (voxel)")
    fig.savefig(path)


def curves_figure(path, times_s, hottest_c, peak_c, protected, alarms, title=""):
    """Temperature-time curves: hottest voxel, frame peak, protected structures.

    Parameters
    ----------
    path : str
        PNG to write.
    times_s : sequence of float, length t
        Frame times, s.
    hottest_c : sequence of float or None
        Temperature of the voxel with the highest Tmax, C.
    peak_c : sequence of float
        Maximum over the frame, C.
    protected : list of dict
        Structure rows of ``report.json`` (``max_c_curve`` drawn when present).
    alarms : list of dict
        Alarms (a vertical line at each ``time_s``).
    title : str, optional
    """
    fig, ax = new_figure(figsize=(7.2, 4.4))
    if hottest_c is not None:
        ax.plot(times_s, hottest_c, "-o", ms=2.5, color="tab:red", label="hottest voxel")
    ax.plot(times_s, peak_c, "--", color="tab:orange", lw=1, label="frame maximum")
    measured_first = sorted(protected, key=lambda r: r.get("source") == "model")  # the model's only after
    for row, colour in zip(measured_first, ["tab:blue", "tab:green", "tab:purple"]):
        if row.get("max_c_curve"):
            model = row.get("source") == "model"
            ax.plot(times_s, row["max_c_curve"], color=colour, ls="--" if model else "-",
                    label=f"{row['structure']}{' MODEL' if model else ''} (max)")
    ax.axhline(43.0, color="grey", ls=":", lw=1)
    ax.axhline(45.0, color="black", ls=":", lw=1)
    ax.text(times_s[0], 43.3, "43 °C (CEM43 reference)", fontsize=7, color="grey")
    ax.text(times_s[0], 45.3, "45 °C", fontsize=7)
    for a in alarms:
        ax.axvline(a["time_s"], color="crimson", lw=0.8, alpha=0.6)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("temperature (°C)")
    ax.set_title(title or "Temperature curves")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path)


def drift_figure(path, times_s, offsets_c):
    """Fitted drift (order-0 term) per slice over time, in C equivalent.

    Parameters
    ----------
    path : str
        PNG to write.
    times_s : sequence of float, length t
    offsets_c : ndarray, shape (t, z)
        Constant drift term per frame and slice, C equivalent.
    """
    fig, ax = new_figure(figsize=(6.4, 3.6))
    for z in range(offsets_c.shape[1]):
        ax.plot(times_s, offsets_c[:, z], lw=1, label=f"slice {z}" if offsets_c.shape[1] <= 8 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("drift offset (°C equivalent)")
    ax.set_title("Fitted B0 drift (constant term) per slice")
    if offsets_c.shape[1] <= 8:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.savefig(path)


def report_figure_inputs(result) -> dict:
    """What the report figures need from a result, as host arrays and plain values (small enough to send to
    :class:`FigureProcess`).

    Parameters
    ----------
    result : ThermometryResult

    Returns
    -------
    dict
        Keyword arguments of :func:`draw_report_figures`.
    """
    r = result
    tmax = r.host("tmax_c")
    z = int(r.hottest_voxel_zyx[0]) if r.hottest_voxel_zyx is not None else tmax.shape[0] // 2
    return {"anatomy": r.host("anatomy"), "tmax_c": tmax, "dose": r.host("dose_cem43_min"),
            "levels": list(r.params.dose_levels_cem43_min), "slice_index": z, "body_temp_c": r.params.body_temp_c,
            "affine": np.asarray(r.affine), "times_s": np.asarray(r.frame_times_s),
            "hottest_c": None if r.hottest_curve_c is None else np.asarray(r.hottest_curve_c),
            "peak_c": np.asarray(r.peak_curve_c), "protected": list(r.protected), "alarms": list(r.alarms),
            "drift_offsets_c": np.asarray(r.drift_coefficients[:, :, 0] * (r.params.phase_sign / r.k_rad_per_c))}


def draw_report_figures(folder, anatomy, tmax_c, dose, levels, slice_index, body_temp_c, affine, times_s, hottest_c,
                        peak_c, protected, alarms, drift_offsets_c) -> list[str]:
    """Draw the three report figures into ``folder`` (created if needed); arguments from
    :func:`report_figure_inputs`.

    Parameters
    ----------
    folder : str
    anatomy, tmax_c, dose, levels, slice_index, body_temp_c, affine
        As for :func:`tmax_dose_figure`.
    times_s, hottest_c, peak_c, protected, alarms
        As for :func:`curves_figure`.
    drift_offsets_c : ndarray, shape (t, z)
        As for :func:`drift_figure`.

    Returns
    -------
    list of str
        File names written.
    """
    os.makedirs(folder, exist_ok=True)
    tmax_dose_figure(os.path.join(folder, "tmax_dose.png"), anatomy, tmax_c, dose, levels, slice_index, body_temp_c,
                     affine=affine)
    curves_figure(os.path.join(folder, "temperature_curves.png"), times_s, hottest_c, peak_c, protected, alarms)
    drift_figure(os.path.join(folder, "drift.png"), times_s, drift_offsets_c)
    return ["tmax_dose.png", "temperature_curves.png", "drift.png"]


def write_all(folder, result):
    """Write every report figure into ``folder``.

    Parameters
    ----------
    folder : str or PathLike
        Created if needed.
    result : ThermometryResult

    Returns
    -------
    list of str
        File names written (PNG, colour bars and units on every map).
    """
    return draw_report_figures(folder, **report_figure_inputs(result))
