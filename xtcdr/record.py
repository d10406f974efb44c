"""One training as a plain record: `Training` (dataset, profile and overrides, world and training
seed). The training grid (`xtcdr.grid`) plans and runs these records; notebooks and
`xtcdr.real` build their models from the same records, so every cache key agrees."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .config import Profile, get_profile

__all__ = ["Training"]


@dataclass(frozen=True)
class Training:
    """One training: dataset, profile (with data / training overrides), split seed and training seed.

    ``data`` overrides fields of the profile's `DataConfig` (e.g. ``{"test_rule": "random"}``),
    ``train`` fields of its `TrainConfig`, ``weights`` fields of its `LossWeights`, ``model``
    fields of its `ModelConfig`; ``prepare_seed`` seeds the split (`xtcdr.pipeline.prepare`) and
    ``seed`` the training. ``notebooks`` lists who needs it. Plain values only, so a record can
    be printed, written as JSON and sent to another process or a cluster node.
    """

    dataset: str
    profile: str = "quick"
    seed: int = 0
    prepare_seed: int = 0
    data: tuple = ()
    train: tuple = ()
    weights: tuple = ()
    model: tuple = ()
    notebooks: tuple = ()
    curve: bool = False

    @classmethod
    def make(cls, dataset, *, profile="quick", seed=0, prepare_seed=0, data=None, train=None,
             weights=None, model=None, notebooks=(), curve=False) -> "Training":
        """Build a record from plain dicts of overrides. ``curve``: the teaching curve of this
        training (`xtcdr.transfer.teaching_curve`, test score tracked) instead of the model."""
        def items(d):
            return tuple(sorted((d or {}).items()))
        return cls(str(dataset), str(profile), int(seed), int(prepare_seed), items(data), items(train),
                   items(weights), items(model), tuple(notebooks), bool(curve))

    def resolved_profile(self) -> Profile:
        """The profile with this record's data, model and training overrides applied."""
        prof = get_profile(self.profile)
        weights = replace(prof.train.weights, **dict(self.weights))
        train = replace(prof.train, **dict(self.train), weights=weights)
        return replace(prof, data=replace(prof.data, **dict(self.data)),
                       model=replace(prof.model, **dict(self.model)), train=train)

    def label(self) -> str:
        """A short readable name: dataset, overrides, split seed and training seed."""
        parts = [self.dataset]
        parts += [f"{k}={v}" for k, v in (*self.data, *self.train, *self.weights, *self.model)]
        parts.append(f"world {self.prepare_seed}")
        if self.seed != self.prepare_seed:
            parts.append(f"training seed {self.seed}")
        return ", ".join(parts) + (" (teaching curve)" if self.curve else "")

    def prepare(self, data_dir=None):
        """The prepared data this training uses (`xtcdr.pipeline.prepare`, cached)."""
        from .pipeline import prepare

        return prepare(self.dataset, profile=self.resolved_profile(), seed=self.prepare_seed,
                       data_dir=data_dir, verbose=False)

    def train_kwargs(self) -> dict:
        """Keyword arguments of `xtcdr.pipeline.train_or_load` for this training."""
        prof = self.resolved_profile()
        return {"profile": prof, "seed": self.seed, "model_config": prof.model,
                "train_config": prof.train}

    def checkpoint_dir(self, adata=None, data_dir=None) -> Path:
        """The cache folder of this training's checkpoint (the key `train_or_load` uses)."""
        from .pipeline import checkpoint_dir

        adata = adata if adata is not None else self.prepare(data_dir)
        return checkpoint_dir(adata, data_dir=data_dir, **self.train_kwargs())

    def to_dict(self) -> dict:
        return {k: (dict(v) if k in ("data", "train", "weights", "model") else
                    list(v) if k == "notebooks" else v) for k, v in asdict(self).items()}
