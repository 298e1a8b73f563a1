"""The one training loop of every generative model: steps, batching, bf16, EMA, checkpoints, resume, metrics, quality.

A model speaks to the loop through one seam, as StyleGAN2-ADA's models speak through ``Loss.accumulate_gradients``
(Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"): it owns its networks
(``networks_``, with EMA copies of those named in ``ema_networks``), returns its optimisers from
``start_training()`` and runs one optimisation step in ``train_step(batches, ctx)``, returning scalar statistics.
The loop owns everything else:

* duration: ``config.steps`` optimisation steps; there are no epochs;
* batching: the model hands over row streams (one for a GAN, one per domain for a CycleGAN, a labelled and an
  unlabelled one for the semi-supervised GAN); in pass p, stream d is read in a permutation that is a function of
  (seed, p, d) only, like ``DistributedSampler.set_epoch``, and a stream shorter than the largest draws several
  fresh permutations per pass (the unaligned loader of Zhu et al. 2017); so a resumed run retraces an
  uninterrupted one exactly;
* batches read a few steps ahead by a background thread (pinned for a non-blocking copy on CUDA), so the device
  never waits for the host's gather of rows;
* bf16 autocast, offered to the step as ``ctx.autocast()`` for its forward passes (weights, optimiser state and
  losses stay fp32), and per-step learning rates (``learning_rate_factor``, e.g. CycleGAN's linear decay);
* no host synchronisation inside a step: a step returns its statistics as device scalars and hands the losses it
  wants checked to ``ctx.check_finite``; the loop reads them for a window of steps at once (``flush``: before every
  metrics record, score, grid and checkpoint) and replays the checks in step order, so a non-finite loss or a
  winning discriminator stops the run with the step it happened at and nothing written after it (on a GPU, one
  ``.item()`` per statistic per step would stall the device every step: CycleGAN's paper batch of one is mostly
  that stall);
* an EMA of generator weights with a warm-up, so short runs average over their own length (a model trained in
  phases says from which step its sampled networks train, ``ema_age``);
* plain-dict checkpoints written atomically with a format version (weights, optimisers, RNG, the model's
  training state such as image pools, partial metric sums, the best quality), exact resume and a divergence stop;
* ``metrics.jsonl``: one record per ``log_every`` steps; a resumed run first drops the records written after its
  checkpoint, so a killed run never leaves duplicates;
* every ``quality_every`` steps a Fréchet distance of samples to a fixed real subset (``quality.py``); the best
  model is kept (``best.pt``, and in memory) and is what ``fit`` leaves the model with (steps at which the model
  cannot sample yet, ``samples_at``, are not scored);
* sample grids and training curves (``artifacts.py``).

Under torchrun the loop is data-parallel: every process draws the same batch rows and takes every ``world``-th of
them; each optimiser averages its gradients over the processes right before its step (what DistributedDataParallel
does, without its one-forward-per-backward assumption that a GAN step breaks); rank 0's buffers are copied to
all after each step and the step statistics averaged, so every process holds the same model and takes the same
decisions (divergence stop, best checkpoint): the statistics and checked losses of a window are summed over the
processes in one all-reduce, so a non-finite loss on one process stops every process at the same step instead of
leaving the others waiting in the next collective. With ``sync_batchnorm`` BatchNorm normalises over the global batch.
Each process draws its own noise from a per-step seed of the shared RNG, so a resumed run still retraces an
uninterrupted one. Files are written by rank 0 only; the others wait for the last of them before going on.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from cxrgan import distributed
from cxrgan.data.transforms import images_to_tensor, uint8_tensor
from cxrgan.errors import CxrganError, RankAgreedError
from cxrgan.generators.artifacts import save_grid, save_training_curves
from cxrgan.generators.blocks import ema_update
from cxrgan.generators.prefetch import BatchPrefetcher
from cxrgan.generators.quality import FidelityScore
from cxrgan.generators.seam import Batch, Statistic, StepContext, Stream, Trainable  # plugins import these from here
from cxrgan.generators.trainer_config import TrainerConfig, config_record  # noqa: F401 (plugins import TrainerConfig from here)
from cxrgan.io import append_jsonl, load_torch, read_jsonl, save_torch, write_json, write_text

CHECKPOINT_FORMAT = 2  # bump when the checkpoint / state_dict layout changes (2: one layout for every model)
CHECKPOINT_NAME = "checkpoint.pt"  # the last state of a run, resumable
BEST_NAME = "best.pt"  # the model state with the best quality score so far
STATUS_NAME = "status.json"  # method, config, progress and quality of a run, for listings
METRICS_NAME = "metrics.jsonl"


def is_main_process() -> bool:
    """True unless torch.distributed runs and this is not rank 0: only the main process writes files."""
    return distributed.is_main()


class Trainer:
    """Trains ``model`` for ``model.config.steps`` steps on ``streams``.

    Args:
        model: a ``Trainable`` whose networks exist (built fresh or loaded from a checkpoint).
        streams: the rows to batch from (see the module docstring).
        run_dir: where checkpoints, best.pt, status.json, metrics.jsonl, curves and grids go; None keeps nothing.
        step_hook: called with the number of finished steps after every step (progress reporting, tests).
    """

    def __init__(self, model: Trainable, streams: list[Stream], run_dir: Path | None = None,
                 step_hook: Callable[[int], None] | None = None):
        if not streams or min(len(s.images) for s in streams) == 0:
            raise CxrganError(f"{model.name}: nothing to train on (an empty stream of training rows)")
        self.model, self.config, self.device = model, model.config, model.device
        self.streams, self.step_hook = streams, step_hook
        self.run_dir = Path(run_dir) if run_dir is not None else None
        largest = max(len(s.images) for s in streams)
        self.batch_size = min(self.config.batch_size, largest)
        self.steps_per_pass = largest // self.batch_size
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if self.batch_size % self.world:
            raise RankAgreedError(f"{model.name}: a batch of {self.batch_size} rows cannot be split evenly over "
                                  f"{self.world} processes; use a batch size that is a multiple of {self.world} "
                                  "(train-gan --batch-size) or fewer processes")
        if self.world > 1 and self.config.sync_batchnorm:
            distributed.convert_batchnorm(model.networks_, self.device)
        self.rng = torch.Generator().manual_seed(self.config.seed)
        self.optimizers = model.start_training()
        self._base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.ctx = StepContext(self.rng, self.optimizers, self.device, self.config.bf16)
        self.step = 0
        self.low_d_steps = 0  # consecutive steps with the watched D loss below divergence_d_loss
        self.sums: dict[str, float] = {}  # statistics summed since the last metrics record, and their count "n"
        self.last_stats: dict[str, float] = {}  # the statistics of the last flushed step (the progress bar)
        self.best: dict | None = None  # {"step", "quality_fd"} of the best-scoring model so far
        self.best_state: dict | None = None  # that model's state, once scored in this process
        self._orders: tuple[int, list[np.ndarray]] | None = None
        self._window: list[tuple[int, dict[str, Statistic], list[tuple[str, torch.Tensor]]]] = []  # unread steps
        self._prefetcher: BatchPrefetcher | None = None
        self._finalized_at: int | None = None  # step at which the sampled networks were last brought up to date
        rows = model.quality_rows(streams) if self.config.quality_every else None
        self.fidelity = None if rows is None else FidelityScore(*rows, n=self.config.quality_images, seed=self.config.seed)

    @property
    def writes(self) -> bool:
        return self.run_dir is not None and is_main_process()

    # ---- batching -----------------------------------------------------------------------------------------------
    def pass_orders(self, pass_index: int) -> list[np.ndarray]:
        """Row order of every stream in pass ``pass_index``: a function of (seed, pass, stream) only."""
        needed, n_streams = self.steps_per_pass * self.batch_size, len(self.streams)
        orders = []
        for d, stream in enumerate(self.streams):
            rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + n_streams * pass_index + d)
            n = len(stream.images)
            orders.append(torch.cat([torch.randperm(n, generator=rng) for _ in range(-(-needed // n))])[:needed].numpy())
        return orders

    def host_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """This process's share of the batch of every stream at ``step`` on the host: uint8 images (B, H, W) and
        labels (rows sorted within a batch; every ``world``-th of them under torchrun), pinned on CUDA."""
        pass_index, within = divmod(step, self.steps_per_pass)
        if self._orders is None or self._orders[0] != pass_index:
            self._orders = (pass_index, self.pass_orders(pass_index))
        pin = self.device.type == "cuda"
        out = []
        for stream, order in zip(self.streams, self._orders[1]):
            rows = np.sort(order[within * self.batch_size:(within + 1) * self.batch_size])[self.rank::self.world]
            images = uint8_tensor(stream.images[rows])
            labels = None if stream.labels is None else torch.from_numpy(np.ascontiguousarray(stream.labels[rows]))
            if pin:
                images, labels = images.pin_memory(), None if labels is None else labels.pin_memory()
            out.append((images, labels))
        return out

    def batches(self, step: int) -> list[Batch]:
        """The batches of every stream at ``step`` on the device (read ahead by the run's prefetcher when it runs)."""
        host = self._prefetcher.get(step) if self._prefetcher is not None else self.host_batches(step)
        out = []
        for images, labels in host:
            images = images_to_tensor(images, self.device, non_blocking=True)
            if self.model.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out.append((images, None if labels is None else labels.to(self.device, non_blocking=True)))
        return out

    # ---- one step -----------------------------------------------------------------------------------------------
    def advance(self) -> dict[str, Statistic]:
        """One optimisation step: batches, learning rates, the model's step, the EMA; its statistics and checks are
        kept unread (device scalars) for the next :meth:`flush`."""
        cfg, model = self.config, self.model
        batches = self.batches(self.step)
        factor = model.learning_rate_factor(self.step)
        for name, optimizer in self.optimizers.items():
            for group, base in zip(optimizer.param_groups, self._base_lrs[name]):
                group["lr"] = base * factor
        self.ctx.step, self.ctx.checks = self.step, []
        if self.world > 1:  # each process its own noise, from a seed the shared RNG draws for this step
            step_seed = int(torch.randint(2 ** 62, (1,), generator=self.rng))
            self.ctx.rng = torch.Generator().manual_seed(step_seed + self.rank)
        stats = model.train_step(batches, self.ctx)
        if self.world > 1:  # one model on every process: rank 0's buffers
            distributed.broadcast_buffers(model.networks_.values())
        age = model.ema_age(self.step)
        if model.ema_ is not None and age >= 0:
            decay = min(cfg.ema_decay, (1 + age) / (10 + age))  # warm-up: average over the networks' training so far
            for name, ema in model.ema_.items():
                ema_update(ema, model.networks_[name], decay)
        self._window.append((self.step, stats, self.ctx.checks))
        self.step += 1
        return stats

    def flush(self) -> None:
        """Read the statistics and checked losses of the steps taken since the last flush (one wait for the device,
        and under torchrun one all-reduce that averages them over the processes), then replay the loop's decisions
        in step order: a non-finite loss, then the divergence watch, then the metric sums."""
        window, self._window = self._window, []
        if not window:
            return
        values: list[Statistic] = []
        for _, stats, checks in window:
            values += list(stats.values()) + [loss for _, loss in checks]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        stacked = [t.detach().float().to(self.device, non_blocking=True) for t in tensors]  # one device, one read
        read = iter(torch.stack(stacked).double().cpu().tolist() if tensors else [])
        numbers = [next(read) if isinstance(v, torch.Tensor) else float(v) for v in values]
        if self.world > 1:
            numbers = [v / self.world for v in distributed.all_sum(numbers)]
        numbers_left = iter(numbers)
        cfg, watched = self.config, self.model.divergence_statistic
        for step, stats, checks in window:
            step_stats = {key: next(numbers_left) for key in stats}
            for which, _ in checks:
                loss = next(numbers_left)
                if not math.isfinite(loss):
                    self.diverged(f"the {which} loss is {loss}", step)
            if watched is not None:
                self.low_d_steps = self.low_d_steps + 1 if step_stats[watched] < cfg.divergence_d_loss else 0
                if self.low_d_steps >= cfg.divergence_patience:
                    self.diverged(f"discriminator loss below {cfg.divergence_d_loss:g} for {self.low_d_steps} steps: "
                                  "D separates real from fake perfectly and G gets no gradient", step)
            for key, value in step_stats.items():
                self.sums[key] = self.sums.get(key, 0.0) + value
            self.sums["n"] = self.sums.get("n", 0) + 1
            self.last_stats = step_stats

    def diverged(self, reason: str, step: int) -> None:
        """Stop: training went wrong at ``step`` (0-based)."""
        path = self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None
        where = f"; the last good checkpoint is {path}" if path and path.exists() else "; no checkpoint was written yet"
        agreed = RankAgreedError if self.world > 1 else CxrganError  # decided on values all processes share
        raise agreed(f"{self.model.name} training diverged at step {step + 1} ({reason}){where}. "
                     f"{self.model.divergence_advice}")

    # ---- the run ------------------------------------------------------------------------------------------------
    def run(self, resume_from: dict | None = None) -> list[dict]:
        """Train to ``config.steps`` (continuing ``resume_from`` if given); returns this process's metric records."""
        cfg = self.config
        if resume_from is not None:
            self.restore(resume_from)
        self._forget_after(self.step)
        history: list[dict] = []
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.model.name, leave=False,
                   disable=not cfg.progress or not distributed.is_main())
        self.model.networks_.train()
        started = time.perf_counter()
        hooks = [distributed.average_gradients_before_step(optimizer)
                 for optimizer in (self.optimizers.values() if self.world > 1 else ())]
        self._prefetcher = BatchPrefetcher(self.host_batches, self.step, cfg.steps)
        try:
            while self.step < cfg.steps:
                self.advance()
                bar.update(1)
                step, last = self.step, self.step == cfg.steps
                logged = step % cfg.log_every == 0 or last
                scored = self.fidelity is not None and (step % cfg.quality_every == 0 or last)
                gridded = self.run_dir is not None and cfg.grid_every and (step % cfg.grid_every == 0 or last)
                saved = cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last
                if logged or scored or gridded or saved:  # the host reads the steps before it uses or keeps them
                    self.flush()
                    bar.set_postfix({k: f"{v:.3f}" for k, v in list(self.last_stats.items())[:2]})
                record = self._take_means() if logged else {}
                if scored and self.model.samples_at(step):
                    record["quality_fd"] = self._score_quality()
                if record:
                    record.update(step=step, seconds=round(time.perf_counter() - started, 3))
                    history.append(record)
                    if self.writes:
                        append_jsonl(self.run_dir / METRICS_NAME, record)
                if gridded:
                    self._save_grid()
                if saved:
                    self.save_checkpoint()
                if self.step_hook is not None:
                    self.step_hook(step)
            self.flush()  # nothing stays unread (the last step was read for its record already)
        finally:
            bar.close()
            self._prefetcher.close()
            self._prefetcher = None
            for hook in hooks:
                hook.remove()
        self._finalize()
        self.save_checkpoint(done=True)
        if self.writes:
            self.model.save_artifacts(self.run_dir)
        distributed.barrier()  # rank 0's files are complete before any process reads them
        return history

    def _take_means(self) -> dict[str, float]:
        n = self.sums.pop("n", 0)
        means = {k: v / n for k, v in self.sums.items()} if n else {}
        self.sums = {}
        return means

    def _finalize(self) -> None:
        """``model.finalize_training()`` once per step (EMA BatchNorm statistics; the next EMA update overwrites
        them), shared by the grid and the quality score of the same step."""
        if self._finalized_at != self.step:
            self.model.finalize_training()
            self._finalized_at = self.step

    def _score_quality(self) -> float:
        self._finalize()
        score = self.fidelity(self.model)
        if self.best is None or score < self.best["quality_fd"]:
            self.best = {"step": self.step, "quality_fd": score}
            self.best_state = copy.deepcopy(self.model.state_dict())  # state_dict() shares the live tensors
            if self.writes:
                save_torch(self.run_dir / BEST_NAME, {**self.best_state, "best": self.best})
        return score

    def final_best_state(self) -> dict | None:
        """The best-scoring model state (scored in this process, or before a resume: best.pt), or None."""
        if self.best is None:
            return None
        if self.best_state is None and self.run_dir is not None and (self.run_dir / BEST_NAME).exists():
            self.best_state = load_torch(self.run_dir / BEST_NAME, "generator checkpoint",
                                         "delete the generator's folder and run again to retrain it")
        return self.best_state

    def _save_grid(self) -> None:
        self._finalize()  # on every process: it may run the networks, which must stay alike everywhere
        preview = self.model.preview_images() if self.writes else None
        if preview is not None:
            images, columns = preview
            save_grid(images, self.run_dir / "samples" / f"step{self.step:06d}.png", columns=columns)

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self, done: bool = False) -> None:
        if not self.writes:
            return
        state = self.model.state_dict()
        state.update(optimizers={name: opt.state_dict() for name, opt in self.optimizers.items()},
                     training_state=self.model.training_state(), rng=self.rng.get_state(), step=self.step,
                     low_d_steps=self.low_d_steps, log_sums=dict(self.sums), best=self.best, done=done)
        save_torch(self.run_dir / CHECKPOINT_NAME, state)
        save_training_curves(self.run_dir / METRICS_NAME, self.run_dir / "loss_curves.png")
        write_json(self.run_dir / STATUS_NAME, {
            "method": self.model.name, "config": config_record(self.config), "step": self.step,
            "steps": self.config.steps, "done": done, "best": self.best,
            "n_train": self.model.data_info_.get("n_train"), "fingerprint": self.model.data_info_.get("fingerprint"),
        })

    def restore(self, checkpoint: dict) -> None:
        """Continue from a checkpoint written by ``save_checkpoint`` (the model has loaded its weights)."""
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        self.rng.set_state(checkpoint["rng"])
        self.step, self.low_d_steps = int(checkpoint["step"]), int(checkpoint["low_d_steps"])
        self.sums = dict(checkpoint.get("log_sums") or {})
        self.best = checkpoint.get("best")
        self.model.load_training_state(checkpoint.get("training_state") or {})

    def _forget_after(self, step: int) -> None:
        """Drop what a killed run wrote after the checkpoint this run restarts from: metric records, a stale best.pt."""
        if not self.writes:
            return
        path = self.run_dir / METRICS_NAME
        records = read_jsonl(path)
        kept = [r for r in records if r.get("step", 0) <= step]
        if len(kept) < len(records):
            write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        if self.best is None:
            (self.run_dir / BEST_NAME).unlink(missing_ok=True)

