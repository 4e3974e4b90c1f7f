"""Orchestration: the step registry, the Prefect flow and its cache keys, the CLI, DVC
stages and the served deployments."""
