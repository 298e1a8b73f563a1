"""Time one DCGAN training step (G + D, batch 64, 64 px, 1 channel, ngf = ndf = 64): ours vs the textbook loop.

The reference is the PyTorch DCGAN tutorial written the usual way, in this script: a sigmoid at the end of D,
``nn.BCELoss``, separate backward passes for the real and the fake batch, the G step backpropagating through D
with D's weight gradients computed (and thrown away at the next ``zero_grad``), contiguous NCHW, fp32.
Ours is one step of the one training loop, ``cxrgan.generators.training.Trainer.advance`` (batch assembly, the
DCGAN family's ``train_step``, bookkeeping) on the same architecture (DCGAN paper: BatchNorm D), with DiffAugment
and EMA off so both do the same work. Each variant's FLOPs per step are counted with
``torch.utils.flop_counter.FlopCounterMode``; the rounds are interleaved so background load hits all alike.

    python benchmarks/gan_step.py [--steps 5] [--rounds 3] [--threads N]

The last two lines, ``ratio fp32 X.XXx`` and ``ratio bf16 X.XXx``, are the speed-ups of our fp32 and bf16 steps
over the reference (targets: >= 1.15x and >= 1.9x on an idle machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cxrgan.generators import DCGAN, DCGANConfig, Stream, Trainer

BATCH, SIZE, Z_DIM, WIDTH = 64, 64, 100, 64


# ---- the reference: PyTorch DCGAN tutorial ----------------------------------------------------------------------
def reference_networks(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)  # benchmark script only; the library never seeds globally
    G = nn.Sequential(
        nn.ConvTranspose2d(Z_DIM, WIDTH * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(WIDTH * 8), nn.ReLU(True),
        nn.ConvTranspose2d(WIDTH * 8, WIDTH * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH * 4), nn.ReLU(True),
        nn.ConvTranspose2d(WIDTH * 4, WIDTH * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH * 2), nn.ReLU(True),
        nn.ConvTranspose2d(WIDTH * 2, WIDTH, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU(True),
        nn.ConvTranspose2d(WIDTH, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )
    D = nn.Sequential(
        nn.Conv2d(1, WIDTH, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(WIDTH, WIDTH * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(WIDTH * 2, WIDTH * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(WIDTH * 4, WIDTH * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(WIDTH * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(WIDTH * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )
    return G, D


class ReferenceStep:
    def __init__(self, real: torch.Tensor, seed: int = 0):
        self.G, self.D = reference_networks(seed)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()
        self.real = real

    def __call__(self) -> None:
        real, G, D = self.real, self.G, self.D
        ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
        D.zero_grad()
        err_real = self.criterion(D(real).view(-1), ones)
        err_real.backward()
        fake = G(torch.randn(len(real), Z_DIM, 1, 1))
        err_fake = self.criterion(D(fake.detach()).view(-1), zeros)
        err_fake.backward()
        self.opt_d.step()
        G.zero_grad()
        err_g = self.criterion(D(fake).view(-1), ones)
        err_g.backward()
        self.opt_g.step()


# ---- ours -------------------------------------------------------------------------------------------------------
class OurStep:
    def __init__(self, images: np.ndarray, **config_changes):
        config = DCGANConfig(ngf=WIDTH, ndf=WIDTH, z_dim=Z_DIM, batch_size=BATCH, progress=False, **config_changes)
        model = DCGAN(config)
        model.data_info_ = {"image_size": SIZE, "label_names": ["x"], "diffaugment": ""}
        model.build()
        self.trainer = Trainer(model, [Stream(images)])

    def __call__(self) -> None:
        self.trainer.advance()


def count_flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round counts")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(BATCH, SIZE, SIZE), dtype=np.uint8)
    real = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    variants = {
        "reference fp32 (tutorial)": ReferenceStep(real),
        "ours fp32": OurStep(images),
        "ours bf16": OurStep(images, bf16=True),
        "ours fp32, spectral-norm D (joint real+fake pass)": OurStep(images, d_norm="spectral"),
        "ours bf16, spectral-norm D (joint real+fake pass)": OurStep(images, d_norm="spectral", bf16=True),
    }
    flops = {name: count_flops(step) for name, step in variants.items()}
    for step in variants.values():  # warm-up: oneDNN primitive creation
        step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)

    print(f"DCGAN step, batch {BATCH}, {SIZE} px, 1 channel, ngf = ndf = {WIDTH}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds x {args.steps} steps")
    reference = statistics.median(times["reference fp32 (tutorial)"])
    print(f"{'variant':<52} {'ms/step':>9} {'speed-up':>9} {'GFLOP/step':>11} {'GFLOP/s':>8}")
    for name in variants:
        seconds = statistics.median(times[name])
        print(f"{name:<52} {seconds * 1e3:9.1f} {reference / seconds:8.2f}x {flops[name] / 1e9:11.1f} {flops[name] / 1e9 / seconds:8.1f}")
    for precision in ("fp32", "bf16"):
        print(f"ratio {precision} {reference / statistics.median(times[f'ours {precision}']):.2f}x")


if __name__ == "__main__":
    main()
