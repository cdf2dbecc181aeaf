"""Per-frame ice-ball watch: segmentation, model isotherms, margins to the cord and nerve roots, alarms.

Per frame: a reliable voxel (signal at baseline) is frozen when its magnitude
drops below ``ice_fraction`` of its baseline mean; holes are filled (bone and
other voxels dark at baseline inside the ball freeze unseen) and only
components touching a probe tip (within 2 voxels), or without tips of at least
``min_ice_voxels``, are kept. Inside the ice the temperature comes from the
model (:mod:`mrtherm.cryo.model`) and PRF is masked (NaN), with the
one-voxel in-plane rim around it (part ice, part water: partial volume);
outside, PRF measures the cooled tissue. The distance to the ice edge is the distance to
the nearest unfrozen voxel that had signal at baseline (a voxel without signal,
e.g. cortical bone, cannot show whether it froze) less half a voxel (the edge
lies between the last frozen and the first unfrozen voxel centre). Margins: the smallest
distance (mm, voxel centre to voxel centre) from an isotherm's region to the
spinal cord and to the nerve roots (the classes of the label table with those
names: 10 and 11 in the default table); an alarm the first time a margin falls
below ``margin_alarm_mm``.
"""

from __future__ import annotations

import numpy as np

from mrtherm.cryo.model import CryoParams, temperature_in_ice_c
from mrtherm.geometry import voxel_size_zyx_mm, voxel_volume_ml
from mrtherm.io.labels import PROTECTED_NAMES, LabelTable


class CryoWatch:
    """Ice ball, model isotherms and margins frame by frame (see the module docstring).

    Parameters
    ----------
    params : CryoParams
    baseline_mean_mag : ndarray, shape (z, y, x)
        Mean baseline magnitude.
    reliable : ndarray of bool, shape (z, y, x)
        Voxels with signal at baseline (SNR mask).
    affine : (4, 4) array
    labels : ndarray of int, shape (z, y, x), optional
        Anatomy labels on the exam grid (for the protected structures).
    table : LabelTable, optional
        Meaning of the label values: the protected structures are its classes named ``"spinal cord"`` and
        ``"nerve root"``, whatever their values (the default table of DESIGN.md otherwise).
    """

    def __init__(self, params: CryoParams, baseline_mean_mag, reliable, affine, labels=None, table=None):
        from scipy import ndimage  # noqa: PLC0415
        self.params = params.validate()
        self.base = np.asarray(baseline_mean_mag, dtype=np.float64)
        self.reliable = np.asarray(reliable, dtype=bool)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.spacing = voxel_size_zyx_mm(self.affine)
        self.vox_ml = voxel_volume_ml(self.affine)
        shape = self.base.shape
        self.tips = np.zeros(shape, dtype=bool)
        for tip in params.tips_mm:
            x, y, z = np.rint(np.linalg.solve(self.affine, np.append(np.asarray(tip, float), 1.0))[:3]).astype(int)
            if 0 <= z < shape[0] and 0 <= y < shape[1] and 0 <= x < shape[2]:
                self.tips[z, y, x] = True
        self.near_tips = ndimage.binary_dilation(self.tips, iterations=2) if self.tips.any() else None
        self.structure_distance = {}
        if labels is not None:
            table = table or LabelTable()
            for name in PROTECTED_NAMES:
                mask = np.isin(np.asarray(labels), table.values_named(name))
                if mask.any():
                    self.structure_distance[name] = ndimage.distance_transform_edt(~mask, sampling=self.spacing)
        self.tmin = np.full(shape, np.inf, dtype=np.float32)
        self.ice_extent = np.zeros(shape, dtype=bool)
        self.masked_extent = np.zeros(shape, dtype=bool)  # ice and its rim, ever: no PRF there
        self.frames, self.alarms = [], []
        self._alarmed = set()

    def segment(self, magnitude):
        """The frozen voxels of one frame.

        Parameters
        ----------
        magnitude : ndarray, shape (z, y, x)

        Returns
        -------
        ndarray of bool, shape (z, y, x)
        """
        from scipy import ndimage  # noqa: PLC0415
        dark = self.reliable & (np.asarray(magnitude) < self.params.ice_fraction * self.base)
        ice = ndimage.binary_fill_holes(dark)
        lab, n = ndimage.label(ice)
        if n == 0:
            return ice
        if self.near_tips is not None:
            keep = np.unique(lab[self.near_tips & ice])
        else:
            sizes = ndimage.sum_labels(ice, lab, index=np.arange(1, n + 1))
            keep = np.flatnonzero(sizes >= self.params.min_ice_voxels) + 1
        return np.isin(lab, keep[keep > 0])

    def model_temperature(self, ice):
        """Model temperature (C) in the frozen voxels, NaN elsewhere.

        Parameters
        ----------
        ice : ndarray of bool, shape (z, y, x)

        Returns
        -------
        ndarray of float64, shape (z, y, x)
        """
        from scipy import ndimage  # noqa: PLC0415
        out = np.full(ice.shape, np.nan)
        if not ice.any():
            return out
        # the edge is where reliable tissue is unfrozen: voxels with no signal at baseline (cortical bone) cannot
        # show ice, so they do not end the ball
        unseen = ice | ~self.reliable
        to_edge = np.maximum(ndimage.distance_transform_edt(unseen, sampling=self.spacing) - 0.5 * min(self.spacing), 0)
        if self.tips.any():
            to_probe = ndimage.distance_transform_edt(~self.tips, sampling=self.spacing)
        else:  # the deepest point of each component stands for the probe
            lab, n = ndimage.label(ice)
            centres = np.zeros(ice.shape, dtype=bool)
            for k, pos in enumerate(ndimage.maximum_position(to_edge, lab, index=np.arange(1, n + 1))):
                centres[pos] = True
            to_probe = ndimage.distance_transform_edt(~centres, sampling=self.spacing)
        out[ice] = temperature_in_ice_c(to_probe[ice], to_probe[ice] + to_edge[ice], self.params)
        return out

    def update(self, time_s, magnitude, temperature_c):
        """Add one frame.

        Parameters
        ----------
        time_s : float
        magnitude : ndarray, shape (z, y, x)
        temperature_c : ndarray, shape (z, y, x)
            PRF temperature (C, NaN where masked).

        Returns
        -------
        ndarray of float32, shape (z, y, x)
            The temperature with the ice masked (NaN).
        """
        from scipy import ndimage  # noqa: PLC0415
        ice = self.segment(magnitude)
        model = self.model_temperature(ice)
        # the in-plane rim holds ice and water in one voxel: its phase is not PRF either
        masked = ndimage.binary_dilation(ice, structure=np.ones((1, 3, 3), bool)) if ice.any() else ice
        temp = np.where(masked, np.nan, np.asarray(temperature_c, dtype=np.float32)).astype(np.float32)
        current = np.where(ice, model, temp)
        self.tmin = np.fmin(self.tmin, current.astype(np.float32))
        self.ice_extent |= ice
        self.masked_extent |= masked
        row = {"time_s": float(time_s), "ice_ml": float(ice.sum() * self.vox_ml), "isotherms": {}}
        for iso in self.params.isotherms_c:
            region = ice & (model <= iso) if iso < 0 else ice
            margins = {name: float(d[region].min()) if region.any() else None
                       for name, d in self.structure_distance.items()}
            row["isotherms"][f"{iso:g}"] = {"volume_ml": float(region.sum() * self.vox_ml), "margin_mm": margins}
            self._check(iso, margins, time_s)
        self.frames.append(row)
        return temp

    def _check(self, iso, margins, time_s):
        for name, margin in margins.items():
            if margin is None or margin >= self.params.margin_alarm_mm or (name, iso) in self._alarmed:
                continue
            self._alarmed.add((name, iso))
            self.alarms.append({"structure": name, "quantity": f"{iso:g} C isotherm margin", "value": margin,
                                "threshold": float(self.params.margin_alarm_mm), "unit": "mm", "time_s": float(time_s),
                                "comparison": "<"})

    def maps(self) -> dict:
        """Output maps: minimum temperature (model inside the ice), ice extent, one mask per isotherm.

        Returns
        -------
        dict of str to ndarray, shape (z, y, x)
        """
        tmin = np.where(np.isfinite(self.tmin), self.tmin, np.nan).astype(np.float32)
        out = {"tmin.nii.gz": tmin, "ice_extent.nii.gz": self.ice_extent.astype(np.uint8)}
        for iso in self.params.isotherms_c:
            out[f"isotherm_{iso:g}c.nii.gz"] = (np.nan_to_num(tmin, nan=np.inf) <= iso).astype(np.uint8)
        return out

    def report(self) -> dict:
        """report.json ``cryo``.

        Returns
        -------
        dict
        """
        p = self.params
        return {"model": "T(r) = T_p ln(R/r) / ln(R/r_p), steady conduction through the frozen cylindrical shell "
                         "(Carslaw & Jaeger 1959); r: distance to the probe tip, R: r + distance to the ice edge",
                "probe_temperature_c": p.probe_temperature_c, "probe_radius_mm": p.probe_radius_mm,
                "ice_rule": f"magnitude < {p.ice_fraction:g} x baseline mean in reliable voxels, holes filled, "
                            + ("connected to a probe tip" if self.tips.any() else
                               f"components of >= {p.min_ice_voxels} voxels"),
                "isotherms_c": list(p.isotherms_c), "margin_alarm_mm": p.margin_alarm_mm,
                "max_ice_ml": max((f["ice_ml"] for f in self.frames), default=0.0),
                "frames": self.frames, "alarms": self.alarms}

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> tuple:
        """What a resumed watch needs besides what it is built from: arrays and JSON.

        Returns
        -------
        arrays : dict of str to ndarray
            ``tmin``, ``ice_extent``, ``masked_extent``.
        meta : dict
            The per-frame rows, the alarms and which (structure, isotherm) pairs have alarmed.
        """
        arrays = {"tmin": self.tmin, "ice_extent": self.ice_extent, "masked_extent": self.masked_extent}
        meta = {"frames": self.frames, "alarms": self.alarms, "alarmed": sorted([n, i] for n, i in self._alarmed)}
        return arrays, meta

    def restore(self, arrays, meta):
        """Continue from :meth:`state` (on a watch built from the same Thermometer).

        Parameters
        ----------
        arrays : dict of str to ndarray
        meta : dict
        """
        self.tmin = np.asarray(arrays["tmin"], dtype=np.float32)
        self.ice_extent = np.asarray(arrays["ice_extent"], dtype=bool)
        self.masked_extent = np.asarray(arrays["masked_extent"], dtype=bool)
        self.frames, self.alarms = list(meta["frames"]), list(meta["alarms"])
        self._alarmed = {(n, float(i)) for n, i in meta["alarmed"]}
