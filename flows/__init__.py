"""Prefect flows that orchestrate the engine's stages."""
