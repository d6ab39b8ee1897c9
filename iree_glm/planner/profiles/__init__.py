"""Device profiles shipped with iree_glm (TOML files), installed as `iree_glm.device_profiles`."""
