"""A respiratory log written while the treatment runs (bellows or navigator, from a monitoring system).

The log has a ``time_s`` column on the frames' clock -- the DICOM acquisition time, seconds since 1970 (seconds
since midnight for images without a date) -- and a signal column (:mod:`mrtherm.io.respiration`). It is read again
whenever it has grown; a last line still being written is left for the next read. A frame gets the signal
interpolated at its acquisition time when the log covers that time; otherwise (the log lags, or stopped) it gets
none, and its library entries are matched on the image instead, as without a log. The frames matched each way are
counted (report.json). A log that becomes unreadable is reported once in the log and its samples read before are
kept: the live service never stops for it.
"""

from __future__ import annotations

import numpy as np

from mrtherm.io.respiration import read_timed_log
from mrtherm.live.growing_log import GrowingLog

__all__ = ["LiveRespiration"]


class LiveRespiration:
    """The respiratory signal of a growing log, at any acquisition time it covers.

    Parameters
    ----------
    path : str
    """

    def __init__(self, path):
        self.log = GrowingLog(path, "respiration log", lambda p: read_timed_log(p, complete_lines=True),
                              "frames are matched on the image until it can be read")
        self.path = self.log.path

    def value_at(self, clock_s: float):
        """The signal at ``clock_s``, or None where the log does not (yet) reach.

        Parameters
        ----------
        clock_s : float
            The frame's acquisition time, s on the log's clock.

        Returns
        -------
        float or None
        """
        samples = self.log.latest()
        if samples is None:
            return None
        t, signal = samples
        if t.size < 2 or not t[0] <= clock_s <= t[-1]:
            return None
        return float(np.interp(clock_s, t, signal))
