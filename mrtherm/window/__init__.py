"""Acoustic-window check: transducers, exact voxel traversal of each element's path, rules and verdict."""

from mrtherm.window.feasibility import active_fractions_numpy, feasibility_map
from mrtherm.window.rules import check_window
from mrtherm.window.scene import Scene, WindowConfig, load_labels
from mrtherm.window.trace import trace
from mrtherm.window.transducer import Transducer, load_transducer, spherical_cap

__all__ = ["Scene", "WindowConfig", "active_fractions_numpy", "check_window", "feasibility_map", "load_labels",
           "trace", "Transducer", "load_transducer", "spherical_cap"]
