"""The one episodic loop (training/loop.py) and the progress display (tools/progress.py), without TensorFlow."""

import io
import math

import numpy as np
import pytest

from metalite.common.progress import SILENT, Progress, as_progress
from metalite.tools.progress import ConsoleProgress
from metalite.training.loop import Hooks, cosine_lr, run_episodes


class _Var:
    def __init__(self):
        self.values = []

    def assign(self, v):
        self.values.append(v)


class _Learner:
    """Records the learning rate of every step; its loss and accuracy are scripted."""

    def __init__(self, losses):
        self.optimizer = type("Opt", (), {})()
        self.optimizer.learning_rate = _Var()
        self.losses = list(losses)

    def train_step(self, episode):
        loss = self.losses.pop(0)
        return {"loss": loss, "acc": 1.0 - loss}


class _Sampler:
    def __init__(self):
        self.drawn = 0

    def sample(self):
        self.drawn += 1
        return self.drawn


class _Recorder(Hooks):
    def __init__(self):
        self.calls = []

    def before_step(self, step):
        self.calls.append(("before", step))

    def after_step(self, done, metrics, averages):
        self.calls.append(("after", done, round(metrics["loss"], 6), round(averages.loss, 6)))


def test_loop_runs_steps_with_cosine_rate_moving_averages_and_hooks():
    losses = np.linspace(1.0, 0.1, 20)
    learner, sampler, hooks = _Learner(losses), _Sampler(), _Recorder()
    out = run_episodes(learner, sampler, 20, 0.5, hooks=hooks)
    lrs = learner.optimizer.learning_rate.values
    assert len(lrs) == 20 and sampler.drawn == 20
    assert (
        lrs[0] == pytest.approx(0.5)
        and lrs[10] == pytest.approx(0.25)
        and lrs[-1] == pytest.approx(cosine_lr(0.5, 19, 20))
    )
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    # hooks in order, before then after each step; the first step sets the average, later ones move it by 10%
    assert hooks.calls[:4] == [
        ("before", 0),
        ("after", 1, 1.0, 1.0),
        ("before", 1),
        ("after", 2, round(losses[1], 6), round(0.9 + 0.1 * losses[1], 6)),
    ]
    assert out["steps"] == 20 and out["loss"] == pytest.approx(
        np.mean(losses[-2:])
    )  # the last 10% of the steps
    assert out["acc"] == pytest.approx(1.0 - np.mean(losses[-2:]))


def test_loop_resumes_at_start_and_keeps_the_schedule_of_the_whole_run():
    learner = _Learner([0.5] * 5)
    out = run_episodes(learner, _Sampler(), 10, 1.0, start=5)
    assert out["steps"] == 5
    assert learner.optimizer.learning_rate.values == [
        pytest.approx(cosine_lr(1.0, s, 10)) for s in range(5, 10)
    ]
    assert cosine_lr(1.0, 10, 10) == pytest.approx(0.0) and cosine_lr(2.0, 0, 10) == 2.0
    assert math.isnan(run_episodes(_Learner([]), _Sampler(), 3, 1.0, start=3)["loss"])


class _Tasks(Progress):
    def __init__(self):
        self.events = []

    def log(self, message):
        self.events.append(("log", message))

    def task(self, label, total, done=0):
        events = self.events
        events.append(("task", label, total, done))

        class T:
            def advance(self, n=1, status=""):
                events.append(("advance", n, status))

            def __enter__(self):
                return self

            def __exit__(self, *a):
                events.append(("close",))

        return T()


def test_loop_reports_progress_and_closes_its_task_on_ctrl_c():
    p = _Tasks()
    run_episodes(_Learner([0.4, 0.2]), _Sampler(), 2, 1.0, progress=p, label="x")
    assert p.events[0] == ("task", "x", 2, 0) and p.events[-1] == ("close",)
    assert p.events[1] == ("advance", 1, "loss 0.400 acc 0.600")

    class Stop(_Learner):
        def train_step(self, episode):
            raise KeyboardInterrupt

    p = _Tasks()
    with pytest.raises(KeyboardInterrupt):
        run_episodes(Stop([]), _Sampler(), 5, 1.0, progress=p)
    assert p.events[-1] == ("close",)


def test_progress_protocol_defaults_to_silence():
    assert as_progress(None) is SILENT and as_progress(False) is SILENT
    with SILENT.task("x", 3) as t:
        t.advance(1, "status")
    with pytest.raises(TypeError):
        as_progress(True)


def test_console_progress_writes_log_lines_when_not_a_terminal(monkeypatch):
    clock = iter(range(0, 1000, 3))  # every call to the clock is 3 s later
    monkeypatch.setattr("metalite.tools.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    p = ConsoleProgress(out, tty=False, interval=5.0)
    with p.task("rendering glyphs", 10) as task:
        for _ in range(10):
            task.advance(1, "ok")
    lines = out.getvalue().splitlines()
    assert lines[0] == "rendering glyphs: 0/10"
    assert lines[-1].startswith("rendering glyphs: 10/10 (100%) ok |")
    assert 3 <= len(lines) <= 8  # a line every 5 s of the 30 s, not one per step
    assert any("left" in line for line in lines[1:-1])


def test_console_progress_draws_a_bar_on_a_terminal():
    out = io.StringIO()
    p = ConsoleProgress(out, tty=True)
    with p.task("prune to 50%", 4) as task:
        task.advance(2, "loss 1.000")
        p.log("step 2: validation 50%")
        task.advance(2)
    text = out.getvalue()
    assert "prune to 50%" in text and "step 2: validation 50%\n" in text and "\r\033[K" in text


def test_glyph_rendering_reports_each_class():
    from metalite.training import glyphs

    p = _Tasks()
    classes = [(cp, "Latin", ("DejaVuSans",)) for cp in (0x41, 0x42, 0x43)]
    images = glyphs._render(classes, image_size=12, samples_per_class=2, progress=p)
    assert images.shape == (3, 2, 12, 12)
    assert p.events[0] == ("task", "rendering glyphs", 3, 0) and [e[0] for e in p.events[1:]] == [
        "advance"
    ] * 3 + ["close"]
