"""Which series make one sonication: the pairing rule shared by ``mrtherm live`` and ``mrtherm run --dicom``.

A treatment is several sonications; each is one thermometry acquisition with
its own baseline, reconstructed either as one series holding both components
(magnitude + phase, or real + imaginary: GE, Philips, enhanced files) or as two
consecutive series of one component each (Siemens: magnitude series N, phase
series N + 1). The rule, applied to images in arrival (or acquisition) order:

1. A series holding both components of a pair is a sonication by itself.
2. A series holding one component is paired with the most recent unpaired
   series on the same grid (orientation, matrix, pixel spacing) that holds
   only the other component; the pair is a sonication.
3. A series never paired (a localiser, an anatomy scan, a field map) is not
   part of the treatment.

Sonications are numbered in the order they form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mrtherm.io import roles
from mrtherm.io.dicom import geometry

PAIRS = ((roles.MAGNITUDE, roles.PHASE), (roles.REAL, roles.IMAG))
THERMOMETRY_ROLES = frozenset(r for pair in PAIRS for r in pair)


def pair_of(role):
    """The component pair ``role`` belongs to (None for other roles)."""
    for pair in PAIRS:
        if role in pair:
            return pair
    return None


@dataclass
class _Series:
    roles: set = field(default_factory=set)
    grid: tuple = ()
    sonication: int | None = None


class SeriesPairing:
    """Assigns series to sonications one image at a time (see the module docstring).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> import numpy as np
    >>> def im(uid, role):
    ...     return NS(series_uid=uid, role=role, orientation=np.array([1., 0, 0, 0, 1, 0]), rows=8, cols=8,
    ...               pixel_spacing=(1.0, 1.0))
    >>> p = SeriesPairing()
    >>> p.assign(im("5", "magnitude")), p.assign(im("6", "phase")), p.assign(im("7", "magnitude"))
    (None, 0, None)
    >>> p.series_of(0)
    ['5', '6']
    """

    def __init__(self):
        self._series: dict[str, _Series] = {}
        self._order: list[str] = []
        self.sonications: list[list[str]] = []

    def assign(self, im) -> int | None:
        """The sonication (0-based) of ``im``'s series, or None while the series is unpaired.

        Parameters
        ----------
        im : DicomImage
            Needs ``series_uid``, ``role`` and the grid attributes.

        Returns
        -------
        int or None
        """
        if im.role not in THERMOMETRY_ROLES:
            return None
        info = self._series.get(im.series_uid)
        if info is None:
            info = self._series[im.series_uid] = _Series(grid=geometry.geometry_key(im))
            self._order.append(im.series_uid)
        if info.sonication is None and im.role not in info.roles:
            info.roles.add(im.role)
            self._pair(im.series_uid, info)
        return info.sonication

    def _pair(self, uid, info):
        pair = pair_of(next(iter(info.roles)))
        if not info.roles <= set(pair):
            return  # components of two pairs in one series: never thermometry
        if info.roles == set(pair):
            self._form([uid])
            return
        other_role = pair[1] if pair[0] in info.roles else pair[0]
        for other in reversed(self._order):
            o = self._series[other]
            if other != uid and o.sonication is None and o.grid == info.grid and o.roles == {other_role}:
                self._form([other, uid])
                return

    def _form(self, uids):
        index = len(self.sonications)
        self.sonications.append(list(uids))
        for u in uids:
            self._series[u].sonication = index

    def series_of(self, index: int) -> list[str]:
        """Series instance UIDs of sonication ``index`` (in pairing order)."""
        return list(self.sonications[index])

    def state(self) -> dict:
        """JSON-able pairing state (the live checkpoint)."""
        return {"sonications": self.sonications}


def acquisition_order(im):
    """Sort key putting images in acquisition order (time, series, instance, frame)."""
    return (im.time_s if im.time_s is not None else 0.0, im.series_number or 0, im.instance_number or 0,
            im.frame or 0)


def group_sonications(records) -> list[list]:
    """The images of each sonication, in sonication order (see the module docstring).

    Parameters
    ----------
    records : list of DicomImage

    Returns
    -------
    list of list of DicomImage
        One list per sonication; images of unpaired series are left out. Empty when nothing pairs.
    """
    pairing = SeriesPairing()
    for im in sorted(records, key=acquisition_order):
        pairing.assign(im)
    index = {uid: k for k, uids in enumerate(pairing.sonications) for uid in uids}
    groups = [[] for _ in pairing.sonications]
    for im in records:
        if im.series_uid in index:
            groups[index[im.series_uid]].append(im)
    return groups
