"""The settings of ``helps-map`` (``cxrgan.recipes.helps_map``): its default points, methods and seeds, the quick
map's, how a generator's steps scale with the minority rows it trains on, and the stored config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cxrgan.classify import TrainConfig
from cxrgan.engine import RunSpec
from cxrgan.engine.spec import nest_run_fields
from cxrgan.errors import CxrganError
from cxrgan.generators import GeneratorSettings
from cxrgan.recipes.compare_setup import CompareConfig
from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER
from cxrgan.recipes.helps_map_report import BASELINE


# The default map: none, duplication, the best cheap fixes of the long-tail literature (Holste et al. 2022), and the
# generator built for few images, FastGAN (Liu et al. 2021), at 3 seeds: within 3 hours on an idle 2-core machine.
# The latent diffusion rows do not fit: cldm-a0.5 and synth-pretrain (one cLDM per point and seed, shared by both)
# add its training (900-3,000 steps) and about 7,000 DDIM samples per point and seed; --methods adds them.
METHODS = ("none", "oversample", "ldam-drw", "logit-adjust", "fastgan")
MINORITY = (16, 25, 50, 100, 400)  # log-spaced; 16 = the fewest images a generator trains on (MIN_TRAIN_IMAGES)
SEEDS = 3
# --quick: a first look in under half an hour: three counts, none, duplication, FastGAN, 2 seeds, 5 epochs
QUICK_MINORITY = (16, 25, 50)  # the default map's smallest points
QUICK_METHODS = ("none", "oversample", "fastgan")
QUICK_SEEDS = 2
QUICK_EPOCHS = 5
GENERATORS_DIR = "generators"


@dataclass(frozen=True)
class GeneratorBudget:
    """Steps of a generator at a point: its preset's steps x a share that drops by ``per_halving`` with every
    halving of the minority rows below ``reference_rows``, never below ``floor``:
    share = clip(1 + per_halving x log2(minority / reference_rows), floor, 1).

    The CPU presets were set on the 402 pneumonias of the 3:1 split. FastGAN's quality curves on the map's own
    points (``benchmarks/generator_quality.py --case fastgan-m25`` / ``fastgan-m100``, audited against the
    pneumonias each saw) put the best trade-off lower with fewer images: on 25, recall 0.24 / 0.71 / 0.71 / 0.77 at
    200 / 400 / 600 / 800 steps while its memorised fraction rose from 0.005 at 400 steps to 0.013 at 600 and 0.031
    at 800 (reference 0.010); on 100, recall 0.41 / 0.68 / 0.75 / 0.77 and FD 3.0 / 4.6 / 2.3 / 2.0 (reference 1.9)
    with nothing memorised (0.003). About 400 of the preset's 1,000 steps at 25 images and 700 at 100: 15 % fewer
    per halving.
    """

    reference_rows: int = 400  # minority rows at which a generator trains its whole preset (presets: 402 pneumonias)
    per_halving: float = 0.15  # share of the preset taken off per halving of the minority rows
    floor: float = 0.25  # the smallest share of the preset any point trains

    def __post_init__(self) -> None:
        if self.reference_rows < 1 or not 0 < self.floor <= 1 or self.per_halving < 0:
            raise CxrganError(f"generator budget: reference_rows must be >= 1, floor in (0, 1] and per_halving >= 0, "
                              f"got {self.reference_rows}, {self.floor} and {self.per_halving}")

    def share(self, minority_rows: int) -> float:
        return min(1.0, max(self.floor, 1.0 + self.per_halving * math.log2(minority_rows / self.reference_rows)))

    def steps(self, preset_steps: int, minority_rows: int) -> int:
        return max(1, round(preset_steps * self.share(minority_rows)))


@dataclass(frozen=True)
class HelpsMapConfig:
    """The map's settings; written to the run's config.json."""

    # data (binary; the positive class is the minority), methods at every point (none among them), classifier seeds
    # per point, classifier, generator settings (--gan-steps fixes the steps at every point), external sites, and
    # data_seed: the seed of the fixed majority rows
    compare: CompareConfig
    minority: tuple[int, ...] | None = None  # minority training rows per point; None = MINORITY up to the class's rows
    majority: int | None = None  # fixed majority (negative) training rows; None = those of compare's 3:1 subset
    generator_seeds: int | None = None  # distinct draws / generators per point; None = one per classifier seed
    budget: GeneratorBudget = GeneratorBudget()  # how generator steps scale with the point (unless --gan-steps)

    @classmethod
    def upgrade_stored(cls, values: dict) -> dict:
        """A config.json written before the map contained a ``CompareConfig``: its comparison fields nested."""
        if "compare" in values:
            return values
        flat = dict(values)
        own = {name: flat.pop(name) for name in ("minority", "majority", "generator_seeds", "budget") if name in flat}
        compare = nest_run_fields(flat, flat.get("train", {}).get("device"))
        return {"compare": {**compare, "baseline": BASELINE}, **own}


def map_config(run: RunSpec, methods: tuple[str, ...] = METHODS, train: TrainConfig = CPU_CLASSIFIER,
               generators: GeneratorSettings = GeneratorSettings(), data_seed: int = 0, **fields) -> HelpsMapConfig:
    """A map's config: its comparison (``none`` the baseline) of ``methods`` on ``run``'s data and seeds, and the
    map's own ``fields`` (minority, majority, generator_seeds, budget)."""
    return HelpsMapConfig(CompareConfig(run=run, methods=tuple(methods), baseline=BASELINE, train=train,
                                        generators=generators, data_seed=data_seed), **fields)
