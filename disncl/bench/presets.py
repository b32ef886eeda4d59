"""The benchmark grids: which runs a preset makes, on which synthetic data, at which budget.

A preset is a main grid (methods × noise rates × noise conventions × seeds) plus, at one focus cell
(``focus_rate`` per-image noise), more seeds for every method, the DisNCL ablations (one term off
each), DisNCL variants (a term replaced, run at every focus seed), and a sweep of the
exclusive-information confound ρ. Runs that coincide (e.g. DisNCL at the focus cell, seed 0,
ρ = 0) are one run with several groups.
"""

from __future__ import annotations

from dataclasses import dataclass

ABLATIONS: dict[str, tuple[str, ...]] = {
    "no_soft_targets": ("loss.soft_targets=false",),
    "no_kl": ("loss.use_kl=false",),
    "no_mi": ("loss.use_mi=false",),
    "no_recon": ("loss.use_recon=false",),
    "full_similarity": ("train.select_on=full",),
    "xcov_mi": ("loss.mi_estimator=xcov", "loss.lambda_mi=1.0"),
}
ABLATION_LABELS = {
    "no_soft_targets": "without soft targets (hard InfoNCE targets)",
    "no_kl": "without the KL / compression terms",
    "no_mi": "without the exclusivity (MI) bound",
    "no_recon": "without reconstruction",
    "full_similarity": "full-feature similarity instead of MII (split and selection)",
    "xcov_mi": "variant: MI bound replaced by a cross-covariance penalty (Eq. 8b), weight 1",
}
METHODS = ("infonce", "ncr", "srem", "disncl")


@dataclass(frozen=True)
class DataSpec:
    """One synthetic dataset of the bench (the generator's seed is fixed at 0)."""

    n_train: int
    n_val: int
    n_test: int
    image_size: int
    confound: float = 0.0


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    method: str
    noise_kind: str
    noise_rate: float
    seed: int
    confound: float = 0.0
    ablation: str = ""

    @property
    def name(self) -> str:
        method = self.method + (f"-{self.ablation}" if self.ablation else "")
        return f"{method}_{self.noise_kind}{self.noise_rate:g}_rho{self.confound:g}_s{self.seed}"

    def overrides(self, preset: Preset, data_root: str) -> list[str]:
        """``section.key=value`` overrides for :func:`disncl.config.load_config`."""
        out = [
            *preset.base,
            f"data.root={data_root}",
            f"data.noise_kind={self.noise_kind}",
            f"data.noise_rate={self.noise_rate}",
            f"data.noise_seed={self.seed}",
            f"train.method={self.method}",
            f"train.seed={self.seed}",
        ]
        return out + list(ABLATIONS[self.ablation] if self.ablation else ())


@dataclass(frozen=True)
class Preset:
    """A benchmark grid and its budget (data size, model, epochs) — the same for every method."""

    name: str
    data: DataSpec
    base: tuple[str, ...]
    methods: tuple[str, ...] = METHODS
    noise_rates: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)
    noise_kinds: tuple[str, ...] = ("image",)
    seeds: tuple[int, ...] = (0,)
    focus_rate: float = 0.4
    focus_seeds: tuple[int, ...] = (0, 1, 2)
    ablations: tuple[str, ...] = ("no_soft_targets", "no_kl", "no_mi", "no_recon", "full_similarity")
    ablation_seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("xcov_mi",)
    confounds: tuple[float, ...] = (0.0, 0.9)
    confound_methods: tuple[str, ...] = ("infonce", "ncr", "disncl")
    jobs: int = 2
    description: str = ""

    def data_specs(self) -> list[DataSpec]:
        base = self.data
        return [DataSpec(base.n_train, base.n_val, base.n_test, base.image_size, rho) for rho in self.confounds]

    def runs(self) -> dict[RunSpec, list[str]]:
        """Every distinct run, mapped to the report groups it belongs to (in a stable order)."""
        out: dict[RunSpec, list[str]] = {}

        def add(spec: RunSpec, group: str) -> None:
            out.setdefault(spec, []).append(group)

        for method in self.methods:
            for kind in self.noise_kinds:
                for rate in self.noise_rates:
                    for seed in self.seeds:
                        add(RunSpec(method, kind, rate, seed), "grid")
        for method in self.methods:
            for seed in self.focus_seeds:
                add(RunSpec(method, "image", self.focus_rate, seed), "seeds")
        for ablation in self.ablations:
            for seed in self.ablation_seeds:
                add(RunSpec("disncl", "image", self.focus_rate, seed, ablation=ablation), "ablation")
        for variant in self.variants:
            for seed in self.focus_seeds:
                add(RunSpec("disncl", "image", self.focus_rate, seed, ablation=variant), "variant")
        for method in self.disncl_first(self.confound_methods):
            for rho in self.confounds:
                add(RunSpec(method, "image", self.focus_rate, 0, confound=rho), "confound")
        return out

    @staticmethod
    def disncl_first(methods: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(methods, key=lambda m: m != "disncl"))


_TINY_MODEL = (
    "model.image_size=32", "model.patch_size=4",
    "model.vision_width=64", "model.vision_layers=2", "model.vision_heads=4",
    "model.text_width=64", "model.text_layers=2", "model.text_heads=4",
    "model.embed_dim=64", "model.mii_dim=32", "model.mei_dim=32", "model.head_hidden=128",
)
_FULL_MODEL = (
    "model.image_size=64", "model.patch_size=8",
    "model.vision_width=256", "model.vision_layers=6", "model.vision_heads=8",
    "model.text_width=256", "model.text_layers=4", "model.text_heads=8",
    "model.embed_dim=256", "model.mii_dim=128", "model.mei_dim=128", "model.head_hidden=512",
)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="a CI check that every part of the bench runs (numbers mean nothing)",
        data=DataSpec(n_train=80, n_val=24, n_test=40, image_size=32),
        base=(*_TINY_MODEL, "train.epochs=2", "train.warmup_epochs=1", "train.batch_size=32",
              "train.lr_warmup_steps=4", "train.device=cpu"),
        noise_rates=(0.4,),
        focus_seeds=(0,),
        ablations=("no_soft_targets",),
        ablation_seeds=(0,),
        variants=(),
        confounds=(0.0,),
        confound_methods=(),
    ),
    "quick": Preset(
        name="quick",
        description="a 2-core CPU in under 15 minutes: small data and model, short schedule",
        data=DataSpec(n_train=500, n_val=150, n_test=250, image_size=32),
        base=(*_TINY_MODEL, "train.epochs=8", "train.warmup_epochs=3", "train.batch_size=128",
              "train.lr=0.002", "train.lr_warmup_steps=40", "train.device=cpu"),
        focus_seeds=(0, 1, 2),
        ablation_seeds=(0,),
        confounds=(0.0, 0.9),
    ),
    "full": Preset(
        name="full",
        description="the grid for one GPU: the calibration-sized data, a larger model, both noise conventions",
        data=DataSpec(n_train=5000, n_val=500, n_test=1000, image_size=64),
        base=(*_FULL_MODEL, "train.epochs=20", "train.warmup_epochs=3", "train.batch_size=128",
              "train.lr=0.0005", "train.lr_warmup_steps=200"),
        noise_kinds=("image", "caption"),
        seeds=(0, 1, 2),
        confounds=(0.0, 0.5, 0.7, 0.9),
        confound_methods=METHODS,
        jobs=1,
    ),
}
