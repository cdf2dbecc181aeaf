"""Post-treatment evaluation: the predicted ablation against the non-perfused volume (NPV)."""
