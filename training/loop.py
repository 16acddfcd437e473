"""The one episodic loop: meta-training (``trainer``) and compression's fine-tuning (``compress``) both run it.

Each step: the outer learning rate follows a cosine decay from ``lr`` to 0 at the last step (Reptile's
epsilon included), hooks run ``before_step``, one outer update is made from a new episode, moving
averages of loss and query accuracy are updated, hooks run ``after_step``, progress advances.
``run_episodes`` returns the mean loss/accuracy of the last 10% of its steps and the moving averages.
A KeyboardInterrupt leaves the loop between or inside a step and is the caller's to handle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metalite.common.progress import as_progress

EMA = 0.1  # weight of the newest step in the moving averages


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """Learning rate of step ``step`` (0-based) of ``steps``: ``lr`` at the start, 0 at the end."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))


@dataclass
class Averages:
    """Moving averages of the outer loss and query accuracy (the first step of a run sets them)."""

    loss: float = float("nan")
    acc: float = float("nan")
    steps: int = 0

    def update(self, metrics: dict) -> None:
        if self.steps == 0:
            self.loss, self.acc = metrics["loss"], metrics["acc"]
        else:
            self.loss += EMA * (metrics["loss"] - self.loss)
            self.acc += EMA * (metrics["acc"] - self.acc)
        self.steps += 1

    def status(self) -> str:
        return f"loss {self.loss:.3f} acc {self.acc:.3f}"


class Hooks:
    """What a caller adds to the loop; every method is optional."""

    def before_step(self, step: int) -> None:
        """Before the update of step ``step`` (0-based)."""

    def after_step(self, done: int, metrics: dict, averages: Averages) -> None:
        """After the update; ``done`` steps are complete."""

    def status(self, averages: Averages) -> str:
        """The progress text after a step."""
        return averages.status()


def run_episodes(
    learner,
    sampler,
    steps: int,
    lr: float,
    *,
    start: int = 0,
    hooks: Hooks | None = None,
    update=None,
    progress=None,
    label: str = "meta-training",
) -> dict:
    """Steps ``start`` .. ``steps - 1`` of episodic meta-learning with ``learner`` on ``sampler``'s episodes.

    ``update(sampler) -> {"loss", "acc"}`` makes one outer update (default: ``learner.train_step`` on one
    new episode; a distributed run passes its own). Returns {"loss", "acc"} (means over the last 10% of the
    steps run), {"ema_loss", "ema_acc"} and "steps" (how many ran).
    """
    hooks = hooks or Hooks()
    update = update or (lambda s: learner.train_step(s.sample()))
    averages, history = Averages(), []
    with as_progress(progress).task(label, steps, start) as task:
        for step in range(start, steps):
            learner.optimizer.learning_rate.assign(cosine_lr(lr, step, steps))
            hooks.before_step(step)
            metrics = update(sampler)
            history.append(metrics)
            averages.update(metrics)
            hooks.after_step(step + 1, metrics, averages)
            task.advance(1, hooks.status(averages))
    tail = history[-max(1, len(history) // 10) :]
    return {
        "loss": float(np.mean([m["loss"] for m in tail])) if tail else float("nan"),
        "acc": float(np.mean([m["acc"] for m in tail])) if tail else float("nan"),
        "ema_loss": averages.loss,
        "ema_acc": averages.acc,
        "steps": len(history),
    }
