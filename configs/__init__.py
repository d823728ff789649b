"""Profiles of thresholds and workload sizes (TOML files beside this module)."""
