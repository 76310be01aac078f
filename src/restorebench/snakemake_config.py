"""Snakemake's `--config` as restorebench overrides: the Snakefile passes each entry to every command as
-S KEY=VALUE, and loads the pipeline with them (docs/ARCHITECTURE.md, "The pipeline")."""

from __future__ import annotations

from typing import Any


def snakemake_overrides(config: dict, prefix: str = "") -> list[str]:
    """Snakemake's --config entries as restorebench overrides (KEY=VALUE, the -S syntax): a mapping is
    flattened to dotted keys (`--config 'profiles={demo: {train: {steps: 5}}}'` is
    profiles.demo.train.steps=5), a list written as a YAML flow list. Values are passed as written, for
    restorebench to parse as YAML (Snakemake parses mappings and lists with YAML's base loader, which keeps
    every scalar a string)."""

    def text(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(text(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {text(v)}" for k, v in value.items()) + "}"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    out = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out += snakemake_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={text(value)}")
    return out
