"""An exam in, a :class:`ThermometryResult` out: the exam's frames through a :class:`SonicationRun`.

Memory stays flat in the number of frames when the temperature series is
streamed to a file (``keep_temperature=False, temperature_path=...``): apart
from the outputs, the loop holds the baseline frames and the Thermometer's
``(z, y, x)`` accumulators.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os

import numpy as np

from mrtherm.app.sonication import RunOptions, SonicationRun
from mrtherm.backend import single_threaded_blas, to_numpy
from mrtherm.errors import ParameterError
from mrtherm.io import atomic, niftiio
from mrtherm.thermometry.params import ThermometryParams
from mrtherm.thermometry.result import ThermometryResult

__all__ = ["process", "process_to_folder", "ThermometryParams"]


@contextlib.contextmanager
def _temperature_writer(path, exam):
    """A streaming 4-D NIfTI writer (or None), closed on success and abandoned on error."""
    if path is None:
        yield None
        return
    times = exam.frame_times_s
    step = float(np.median(np.diff(times))) if len(times) > 1 else None
    writer = niftiio.FrameWriter(path, exam.shape_zyx, exam.n_frames, exam.affine, step,
                                 raw_copy=f"{os.fspath(path)}.frames.raw")
    try:
        yield writer
    except BaseException:
        writer.abort()
        _remove(writer.raw_copy)
        raise
    writer.close()


def _remove(path):
    with contextlib.suppress(OSError):
        os.remove(path)


def _frame_range(n, progress):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm  # noqa: PLC0415
    return tqdm(range(n), desc="frames", unit="frame")


def _hottest_curve(th, temperature, temperature_path):
    """Temperature over time at the voxel of the highest Tmax, from where the series went (the writer's
    uncompressed frame copy, then removed)."""
    tmax = to_numpy(th.tmax_c)
    if temperature is not None or temperature_path is None:
        return None
    raw = f"{os.fspath(temperature_path)}.frames.raw"
    try:
        if not np.isfinite(tmax).any():
            return None
        z, y, x = np.unravel_index(int(np.nanargmax(tmax)), tmax.shape)
        if os.path.exists(raw):
            # 4 bytes per frame by seek and read: a memory map would fault in (and count) read-ahead around every
            # frame, hundreds of MB for a long series
            frame_bytes = 4 * int(np.prod(th.shape))
            offset = 4 * int(np.ravel_multi_index((z, y, x), th.shape))
            chunks = []
            with open(raw, "rb", buffering=0) as fh:
                for t in range(th.frames_processed):
                    fh.seek(t * frame_bytes + offset)
                    chunks.append(fh.read(4))
            return np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float64)
        import nibabel as nib  # noqa: PLC0415
        return np.asarray(nib.load(str(temperature_path)).dataobj[x, y, z, :], dtype=np.float64)
    finally:
        _remove(raw)


def process(exam, params: ThermometryParams | None = None, *, labels=None, drift_roi=None, label_table=None,
            backend: str = "auto", keep_temperature: bool = True, temperature_path=None, progress: bool = False,
            profile: bool = False, progress_callback=None, respiration=None, cryo=None,
            **overrides) -> ThermometryResult:
    """Temperature and thermal dose maps of a whole exam (see :class:`mrtherm.Thermometer` for the physics).

    Parameters
    ----------
    exam : Exam, or list of Exam
        From :func:`mrtherm.load_exam`; a list of echoes (``load_exam(..., water_fat=True)``) runs water-fat
        thermometry (:func:`mrtherm.app.waterfat_run.process_water_fat`) and returns its ``WaterFatResult``.
    params : ThermometryParams, optional
        Keyword ``overrides`` (e.g. ``drift_order=1``) replace single fields.
    labels, drift_roi, label_table, backend
        As for :class:`mrtherm.Thermometer`.
    keep_temperature : bool
        Keep the ``(t, z, y, x)`` float32 temperature series in the result.
    temperature_path : path, optional
        Stream the 4-D temperature NIfTI here frame by frame (memory stays flat).
    progress : bool
        tqdm progress bar.
    progress_callback : callable, optional
        ``progress_callback(frames_done, n_frames)`` after each frame (GUI worker threads).
    profile : bool
        Time the CUDA kernels; the report gains ``"kernel_seconds"``.
    respiration : sequence of float, optional
        Respiratory signal (bellows, navigator) per frame: the library modes match entries on it
        (:func:`mrtherm.io.respiration.read_respiration` reads a log).
    cryo : CryoParams, optional
        Cryoablation (:mod:`mrtherm.cryo`): the ice ball is segmented per frame and masked out of PRF (NaN in the
        temperature, dose and Tmax), the model isotherms and margins go to report.json ``cryo`` and the maps
        ``tmin``, ``ice_extent`` and ``isotherm_<T>c``.

    Returns
    -------
    ThermometryResult
        Maps in the array library of in-memory inputs (NumPy for files).

    Raises
    ------
    ParameterError, InputFileError
        One-line messages naming the argument or file.
    """
    if isinstance(exam, (list, tuple)) or (params is not None and params.water_fat) or overrides.get("water_fat"):
        return _water_fat(exam, params, overrides)
    params = dataclasses.replace(params or ThermometryParams(), **overrides).validate(exam.n_frames)
    resp = _respiration_per_frame(respiration, exam.n_frames)
    run = SonicationRun(exam.shape_zyx, exam.affine, exam.te_s, exam.b0_t,
                        RunOptions(params, labels=labels, drift_roi=drift_roi, label_table=label_table,
                                   backend=backend, cryo=cryo, profile=profile, keep_model_series=True),
                        warnings=exam.warnings, baseline_respiration=respiration is not None)
    temperature = None
    with _temperature_writer(temperature_path, exam) as writer:
        for t, temp in _frames(run, exam, resp, progress):
            if temperature is None and keep_temperature:
                temperature = run.th.xp.empty((exam.n_frames,) + tuple(exam.shape_zyx), dtype=run.th.xp.float32)
            _store(t, temp, temperature, writer, progress_callback, exam.n_frames)
    return _result(run, exam, temperature, temperature_path, profile)


def _result(run, exam, temperature, temperature_path, profile):
    """The finished run's :class:`ThermometryResult`, with the cryo watch's maps when there is one."""
    th = run.th
    result = ThermometryResult.from_thermometer(
        th, exam, temperature=temperature, temperature_path=temperature_path,
        hottest_curve=_hottest_curve(th, temperature, temperature_path), out_xp=exam.in_memory_namespace,
        kernel_seconds=th.engine.kernel_seconds() if profile else None)
    if run.cryo_watch is not None:
        result.apply_cryo(run.cryo_watch)
    return result


def _respiration_per_frame(respiration, n_frames):
    """One respiratory value (or None) per frame."""
    resp = [None] * n_frames if respiration is None else [float(v) for v in respiration]
    if len(resp) != n_frames:
        raise ParameterError(f"respiration has {len(resp)} values for {n_frames} frames")
    return resp


def _store(t, temp, temperature, writer, progress_callback, n_frames):
    """Frame ``t``'s temperature into the kept series and the streaming writer; progress reported."""
    if temperature is not None:
        temperature[t, ...] = temp
    if writer is not None:
        writer.write(to_numpy(temp))
    if progress_callback is not None:
        progress_callback(t + 1, n_frames)


def _frames(run, exam, resp, progress):
    """``(t, temperature)`` for every frame, in order, through the run; once the Thermometer exists the next frame
    is read (and gunzipped: zlib releases the GIL) in a thread and uploaded while the current one is computed."""
    nt, t_done = exam.n_frames, 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrtherm-read") as reader, \
            single_threaded_blas():
        upcoming = exam.frame_parts(0)
        for t in _frame_range(nt, progress):
            ahead = reader.submit(exam.frame_parts, t + 1) if run.started and t + 1 < nt else None
            for temp in run.feed(upcoming, exam.frame_times_s[t], respiration=resp[t]):
                yield t_done, temp
                t_done += 1
            if t + 1 < nt:
                upcoming = run.to_device(exam.frame_parts(t + 1) if ahead is None else ahead.result())


def _add_probes(result, probes, cold_alarm_c):
    """report.json ``probes``, the probe alarms and the curves for the figures."""
    from mrtherm.probes.report import analyse, write_figures  # noqa: PLC0415 -- probes only when given
    section, alarms, curves = analyse(probes, result.params, series=result.temperature_path,
                                      sd_map=result.host("temperature_sd_c"), affine=result.affine,
                                      frame_times_s=result.frame_times_s, cold_alarm_c=cold_alarm_c)
    result.report["probes"] = section
    result.report["alarms"] = list(result.report["alarms"]) + alarms
    result.alarms = list(result.alarms) + alarms
    result.figure_writers.append(lambda folder: write_figures(folder, curves, result.params, cold_alarm_c))


def _water_fat(echoes, params, overrides):
    """:func:`process` of a list of echoes (water-fat thermometry)."""
    from mrtherm.app.waterfat_run import process_water_fat  # noqa: PLC0415
    if not isinstance(echoes, (list, tuple)):
        raise ParameterError("water_fat needs the list of echoes of mrtherm.load_exam(..., water_fat=True)")
    params = dataclasses.replace(params or ThermometryParams(), water_fat=True, **overrides)
    return process_water_fat(list(echoes), params)


def process_to_folder(exam, out_dir, params=None, *, figures=True, probes=None, cold_alarm_c=None,
                      gzip_level=niftiio.DEFAULT_GZIP_LEVEL, **kwargs) -> ThermometryResult:
    """:func:`process` with every output written to ``out_dir`` completely or not at all.

    The temperature series streams into the staging folder (memory flat in frames); the
    folder is committed only when every file is written.

    Parameters
    ----------
    exam : Exam
    out_dir : str or PathLike
        Output folder (created; files already there and not written by mrtherm are kept).
    params : ThermometryParams, optional
    figures : bool
        Write ``figures/*.png``.
    probes : dict of str to Probe, optional
        Probe readings (:mod:`mrtherm.probes`): report.json gains ``probes`` (MR at each positioned probe
        against its readings, the probe's dose) and the probe alarms; a figure per probe.
    cold_alarm_c : float, optional
        Cold alarm of watched probes (cryoablation), C.
    gzip_level : int
        Compression of the ``.nii.gz`` outputs, 0 (stored: fastest, largest) to 9
        (:func:`mrtherm.io.niftiio.gzip_level`).
    **kwargs
        Passed to :func:`process` (labels, drift_roi, backend, ...).

    Returns
    -------
    ThermometryResult
        Without the 4-D temperature in memory (``temperature_path`` points at the file).
    """
    with atomic.staged(out_dir) as stage, niftiio.gzip_level(gzip_level):
        result = process(exam, params, keep_temperature=False,
                         temperature_path=os.path.join(stage, "temperature.nii.gz"), **kwargs)
        if probes:
            _add_probes(result, probes, cold_alarm_c)
        result.write_into(stage, figures=figures)
    result.temperature_path = os.path.join(os.path.abspath(out_dir), "temperature.nii.gz")
    return result
