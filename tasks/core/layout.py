"""Where every step reads and writes, relative to the experiment's root folder (the
folder of ``params.yaml``). One place, so Prefect, DVC (``dvc.yaml``) and people agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def base_model(self) -> Path:
        return self.root / "models" / "base"

    @property
    def pruned(self) -> Path:
        return self.root / "models" / "pruned"

    @property
    def variants(self) -> Path:
        return self.root / "models" / "variants"

    @property
    def variants_index(self) -> Path:
        return self.variants / "index.json"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics" / "train.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def device_results(self, device: str) -> Path:
        return self.results / device

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def summary(self) -> Path:
        return self.reports / "summary.json"

    @property
    def tracking_record(self) -> Path:
        return self.root / "metrics" / "mlflow_run.json"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    def device_releases(self, device: str) -> Path:
        """A device's release record (``release.json``) and, for a microcontroller, its
        firmware-ready bundles (``<release-id>/``)."""
        return self.releases / device

    @property
    def code_manifests(self) -> Path:
        """Each step's code manifest (``<step>.json``): written by dvc.yaml's code stage,
        versioned by git beside dvc.lock, so a fresh clone's ``dvc status`` is clean."""
        return self.root / "code-manifests"

    @property
    def state(self) -> Path:
        """Tool state that is neither an artifact nor versioned (caches, device dirs)."""
        return self.root / ".edgeflow"

    @property
    def logs(self) -> Path:
        """One log file per command that runs steps: what the libraries printed."""
        return self.state / "logs"
