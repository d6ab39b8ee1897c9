"""Device profiles shipped with iree_glm (TOML files; format in README.md beside them)."""
