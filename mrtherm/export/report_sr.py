"""The run's figures as a TID 1500 Measurement Report (Comprehensive 3D SR), built with highdicom.

- one volumetric measurement group per lesion dose level: its volume (mL) on its segment of the export's
  Segmentation (``lesion_volumes_ml`` of report.json, which counts the same voxels);
- one group with the peak temperature (Cel) and the maximum dose (min) (the Parametric Maps are in its evidence);
- one group with the acquisition and PRF parameters (TE ms, B0 T, alpha ppm/C, baseline frames) and every alarm
  as a qualitative evaluation (local code ``ALARM``: the structure, the quantity, its value and threshold, the time).
"""

from __future__ import annotations

from mrtherm.export.common import LOCAL_SCHEME, SERIES, SOFTWARE, digest_uid, highdicom, run_seed

UCUM = {"ml": "milliliter", "Cel": "degree Celsius", "min": "minute", "ms": "millisecond", "T": "Tesla",
        "ppm/Cel": "parts per million per degree Celsius", "{frames}": "frames"}


def _local(hd, value, meaning):
    return hd.sr.CodedConcept(value[:16], LOCAL_SCHEME, meaning[:64])


def _measure(hd, code, meaning, value, unit):
    return hd.sr.Measurement(name=_local(hd, code, meaning), value=float(value),
                             unit=hd.sr.CodedConcept(unit, "UCUM", UCUM[unit]))


def _lesion_groups(hd, maps, seg, sources, uid):
    from pydicom.sr.codedict import codes  # noqa: PLC0415
    volumes = maps.report.get("results", {}).get("lesion_volumes_ml", {})
    groups = []
    for number, level in enumerate(maps.lesions, start=1):
        if level not in volumes or seg is None:
            continue
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid("lesion", level), f"lesion {level} CEM43"),
            referenced_segment=hd.sr.ReferencedSegment(
                seg.SOPClassUID, seg.SOPInstanceUID, number,
                source_series=hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID))),
            finding_type=codes.SCT.Necrosis,
            measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=float(volumes[level]),
                                            unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"))]))
    return groups


def _peak_group(hd, maps, uid):
    results = maps.report.get("results", {})
    measurements = []
    if results.get("peak_temperature_c") is not None:
        measurements.append(_measure(hd, "PEAK-T", "Peak temperature", results["peak_temperature_c"], "Cel"))
    if results.get("max_dose_cem43_min") is not None:
        measurements.append(_measure(hd, "MAX-CEM43", "Maximum thermal dose (CEM43)",
                                     min(float(results["max_dose_cem43_min"]), 1e300), "min"))
    if not measurements:
        return []
    return [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid("peak"), "peak temperature and dose"),
        measurements=measurements)]


def _alarm_text(alarm):
    value, threshold = alarm.get("value"), alarm.get("threshold")
    parts = [str(alarm.get("structure", "?")), str(alarm.get("quantity", "?"))]
    if value is not None and threshold is not None:
        parts.append(f"{float(value):.3g} >= {float(threshold):.3g}")
    if alarm.get("time_s") is not None:
        parts.append(f"t {float(alarm['time_s']):.1f} s")
    return " ".join(parts)


def _parameter_group(hd, maps, uid):
    exam, params = maps.report.get("exam", {}), maps.report.get("parameters", {})
    measurements = []
    if exam.get("te_s") is not None or params.get("te_s") is not None:
        measurements.append(_measure(hd, "TE", "Echo time", 1e3 * float(exam.get("te_s", params.get("te_s"))), "ms"))
    b0 = exam.get("b0_t", params.get("b0_t"))
    if b0 is not None:
        measurements.append(_measure(hd, "B0", "Field strength", b0, "T"))
    alpha = params.get("alpha_ppm_per_c")
    if alpha is not None:
        measurements.append(_measure(hd, "PRF-ALPHA", "PRF thermal coefficient", alpha, "ppm/Cel"))
    if params.get("baseline_frames") is not None:
        measurements.append(_measure(hd, "BASELINE", "Baseline frames", params["baseline_frames"], "{frames}"))
    alarms = [hd.sr.QualitativeEvaluation(_local(hd, "ALARM", "Protected structure alarm"),
                                          _local(hd, f"A{k + 1}", _alarm_text(a)))
              for k, a in enumerate(maps.report.get("alarms", []))]
    if not measurements and not alarms:
        return []
    return [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid("parameters"), "acquisition, parameters and alarms"),
        measurements=measurements or None, qualitative_evaluations=alarms or None)]


def measurement_report(maps, sources, made):
    """The export's TID 1500 Measurement Report.

    Parameters
    ----------
    maps : mrtherm.export.dicom_objects.RunMaps
    sources : list of pydicom.Dataset
    made : dict of str to pydicom.Dataset
        The export's other objects by file name (the SR references them).

    Returns
    -------
    pydicom.Dataset
    """
    from pydicom.sr.codedict import codes  # noqa: PLC0415
    hd = highdicom()
    uid = lambda *kind: digest_uid(run_seed(maps), "sr", *kind)  # noqa: E731
    device = hd.sr.ObserverContext(observer_type=codes.cid270.Device,
                                   observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                                       uid=uid("device"), name="mrtherm", manufacturer_name="mrtherm",
                                       model_name=SOFTWARE))
    groups = _lesion_groups(hd, maps, made.get("seg.dcm"), sources, uid) + _peak_group(hd, maps, uid) + \
        _parameter_group(hd, maps, uid)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_local(hd, "MRGFUS-THERM", "MR-guided focused ultrasound thermometry"),
        imaging_measurements=groups)
    evidence = list(sources) + [ds for name, ds in made.items() if name.endswith(".dcm")]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=uid("series"), series_number=SERIES["sr"],
        sop_instance_uid=uid("instance"), instance_number=1, manufacturer="mrtherm", is_complete=True)
    sr.SeriesDescription = "mrtherm measurement report"
    return sr
