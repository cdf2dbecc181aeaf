"""Argument types and checks shared by the commands."""

from __future__ import annotations

# one definition of each: the argument types in the run option table, the output-folder check beside the atomic
# writers (re-exported for the commands)
from mrtherm.app.options import BACKENDS, float_list, frame_times, target_point
from mrtherm.io.atomic import check_out_dir

__all__ = ["BACKENDS", "EXIT_USER_ERROR", "check_out_dir", "float_list", "frame_times", "target_point"]

EXIT_USER_ERROR = 2
