"""PRF thermometry: phase change, temporal unwrapping, drift, masks and noise, CEM43 dose, the per-frame engines,
the batch loop and its result."""
