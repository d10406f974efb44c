"""Frozen configuration dataclasses and the named profiles ``quick`` and ``paper``.

Every checkpoint and every table is saved with the configuration that produced it
(``asdict(profile)``), so a number can always be traced back to its settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
import hashlib
import json

__all__ = [
    "DataConfig", "ModelConfig", "LossWeights", "TrainConfig", "Profile",
    "PROFILES", "get_profile", "config_hash",
]


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing and split settings."""

    n_top_genes: int = 2000      # highly variable genes kept (all genes if the data has fewer)
    n_degs: int = 50             # top differentially expressed genes per condition
    min_log2fc: float = 1.0      # the paper's DEG threshold, log2 |fold change| >= 1
    deg_rule: str = "fold_change"  # "fold_change" (the paper) or "score" (t-score alone)
    hvg_cells: str = "all"       # "all" (the released code) or "non_test" (held-out cells excluded)
    test_rule: str | None = None  # None: the dataset's default; "published" | "strongest" | "random" | "doubles"
    n_test: int | None = None    # k for "strongest"/"random"/"doubles"; None: the dataset's or test_fraction (every double for "doubles")
    valid_fraction: float = 0.2  # cells of training perturbations held for validation (paper: 4:1)
    test_fraction: float = 0.2   # perturbations held out when a dataset has no published list

    def __post_init__(self):
        if self.hvg_cells not in ("all", "non_test"):
            raise ValueError(f"DataConfig.hvg_cells must be 'all' or 'non_test', got {self.hvg_cells!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of E_s, E_p and D.

    ``variant="paper"``: plain layers ``hidden`` then a linear latent layer of size ``latent``,
    each hidden layer followed by batch norm, ReLU and dropout (paper, "Implementation").
    ``variant="released"``: the authors' released code: the first two hidden layers, then
    ``n_residual`` residual blocks at that width, then the rest; ReLU on the latent code and on the
    decoder output; Gaussian noise of std ``noise_std`` on encoder inputs and latent codes while
    training.
    """

    hidden: tuple[int, ...] = (1024, 512, 256)
    latent: int = 128
    dropout: float = 0.2
    batch_norm: bool = True
    variant: str = "paper"
    n_residual: int = 3
    noise_std: float = 0.1

    def __post_init__(self):
        if self.variant not in ("paper", "released"):
            raise ValueError(f"ModelConfig.variant must be 'paper' or 'released', got {self.variant!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term of Eq. 6; a weight of 0 removes the term (ablations).

    The paper sums the five terms ("appropriately weighted", weights not given):
    ``LossWeights.paper()``. The released config weights reconstruction, cross transfer and basal
    reconstruction 5 each, similarity 5 and orthogonality 0.5: ``LossWeights.released()``.

    ``combo`` weights a fifth reconstruction term that only the released double-gene code has,
    ``D(S^a + P^a + P^b) -> X^(a+b)`` on measured *training* doubles (`xtcdr.losses`,
    ``combination_reconstruction``). 0 (the default) switches it off: the paper trains on single
    perturbations only. With a weight > 0 some doubles must be in training, e.g. prepare the data
    with ``DataConfig(test_rule="doubles", n_test=k)`` (k seeded doubles held out, the rest train).
    """

    orth: float = 1.0
    sim: float = 1.0
    reco_basal: float = 1.0
    reco_self: float = 1.0
    cross: float = 1.0
    combo: float = 0.0  # the released code's fifth loss on training doubles; 0 = off (the paper)

    @classmethod
    def paper(cls) -> "LossWeights":
        return cls()

    @classmethod
    def released(cls) -> "LossWeights":
        return cls(orth=0.5, sim=5.0, reco_basal=5.0, reco_self=5.0, cross=5.0)

    def without(self, *terms: str) -> "LossWeights":
        """The same weights with the named terms switched off (e.g. ``without("cross")``)."""
        unknown = set(terms) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; valid: {sorted(asdict(self))}")
        return replace(self, **{t: 0.0 for t in terms})


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``schedule="step"`` is the released StepLR(step 8, gamma 0.5)."""

    epochs: int = 60
    batch_size: int = 512
    lr: float = 2e-4
    weight_decay: float = 0.0
    schedule: str = "none"       # "none" or "step"
    step_size: int = 8
    gamma: float = 0.5
    seed: int = 0
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self):
        if self.schedule not in ("none", "step"):
            raise ValueError(f"TrainConfig.schedule must be 'none' or 'step', got {self.schedule!r}")
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", LossWeights(**self.weights))


@dataclass(frozen=True)
class Profile:
    """A named bundle of the four configurations."""

    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # CPU, minutes: a smaller network and a higher learning rate so that a laptop finishes.
    "quick": Profile(
        name="quick",
        data=DataConfig(n_top_genes=1000, n_degs=50),
        model=ModelConfig(hidden=(256, 128), latent=64, dropout=0.1),
        train=TrainConfig(epochs=30, batch_size=256, lr=1e-3),
    ),
    # The paper's settings (section "Implementation"): 1024/512/256/128, BN, dropout 0.2, ReLU,
    # latent 128, lr 2e-4, 60 epochs; batch 512 as in the released code. For a GPU.
    "paper": Profile(
        name="paper",
        data=DataConfig(n_top_genes=2000, n_degs=50),
        model=ModelConfig(hidden=(1024, 512, 256), latent=128, dropout=0.2),
        train=TrainConfig(epochs=60, batch_size=512, lr=2e-4),
    ),
}


def get_profile(name: str | Profile) -> Profile:
    """Return a named profile; a ``Profile`` passes through."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {sorted(PROFILES)}")
    return PROFILES[name]


def config_hash(*objs) -> str:
    """A short stable hash of dataclasses / plain values, used as a cache key."""
    def plain(o):
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        return o
    text = json.dumps([plain(o) for o in objs], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
