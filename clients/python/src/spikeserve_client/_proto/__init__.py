"""Stubs generated from ``proto/anytime/v1/anytime.proto`` by ``tools/generate_stubs.py`` (do not edit)."""
