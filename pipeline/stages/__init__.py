"""The DVC stages: each module has `run(config) -> StageResult` and a thin `main`; nothing imports a stage."""
