"""``metalite train --strategy``: mirrored and multi-worker meta-training (training/distribute.py).

TensorFlow fixes its devices (and a multi-worker cluster) when it first initializes, so every check
that needs two logical CPU devices or a TF_CONFIG runs in a fresh subprocess of its own, bounded
by a timeout and killed on failure.
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from repo_paths import TESTS
from training_kit import make_folder

TIMEOUT = 300  # seconds per subprocess (2 shared cores: TF import alone takes ~10 s)

PRELUDE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    from metalite.export.tfcompat import tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
""")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("folder"), classes=12, per_class=8)


def _env(tmp_path, **extra):
    env = {
        **os.environ,
        "METALITE_CACHE": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_script(tmp_path, name, body, *args, env=None):
    script = tmp_path / name
    script.write_text(PRELUDE.format(tests=str(TESTS)) + textwrap.dedent(body))
    res = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env or _env(tmp_path),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res.stdout


@pytest.mark.slow
def test_mirrored_step_equals_one_device_step_with_the_mean_gradient(folder, tmp_path):
    """One step on 2 replicas over episodes (e1, e2) == one single-device SGD step with (g1 + g2) / 2."""
    out = _run_script(
        tmp_path,
        "equivalence.py",
        """
        from metalite.training.algorithms import make_learner
        from metalite.training.datasets import load_data
        from metalite.training.distribute import DistributedLearner
        from metalite.training.episodes import EpisodeSampler
        from metalite.training.models import build_backbone, build_head

        data = load_data("folder:" + sys.argv[1], 28, "all")
        sampler = EpisodeSampler(data, 3, 1, 2, seed=5)
        episodes = [sampler.sample(), sampler.sample()]

        def build(algorithm):
            tf.keras.utils.set_random_seed(0)
            bb = build_backbone({"kind": "conv4", "filters": 8, "embedding_dim": 8})
            learner = make_learner(algorithm, bb, build_head({"hidden": [8]}, 8), {"inner_steps": 2})
            learner.optimizer = keras.optimizers.SGD(0.5)  # linear in the gradient: exact comparison
            return learner

        results = {}
        for algorithm in ("protonet", "anil"):
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
            with strategy.scope():
                dist = build(algorithm)
            m = DistributedLearner(dist, strategy).train_step(episodes)
            ref, init = build(algorithm), [v.numpy() for v in build(algorithm).variables]
            grads, losses = [], []
            for e in episodes:
                g, loss, _ = ref.compute_gradients(tf.constant(e.support_x), tf.constant(e.support_y, tf.int32),
                                                   tf.constant(e.query_x), tf.constant(e.query_y, tf.int32), e.ways)
                grads.append(g)
                losses.append(float(loss))
            ref.optimizer.apply_gradients(zip([(a + b) / 2 for a, b in zip(*grads)], ref.variables))
            results[algorithm] = {
                "replicas": strategy.num_replicas_in_sync, "loss": m["loss"], "ref_loss": float(np.mean(losses)),
                "diff": max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(dist.variables, ref.variables)),
                "moved": max(float(np.abs(a.numpy() - b).max()) for a, b in zip(dist.variables, init)),
                "diff_to_g1": max(float(np.abs(a.numpy() - (b - 0.5 * g.numpy())).max())
                                  for a, b, g in zip(dist.variables, init, grads[0])),
            }
        print("RESULT " + json.dumps(results))
    """,
        folder,
    )
    results = json.loads(out.split("RESULT ", 1)[1])
    for algorithm, r in results.items():
        assert r["replicas"] == 2, r
        assert r["moved"] > 1e-2, r  # the step did something measurable
        assert r["diff"] < 1e-5, (algorithm, r)  # ... and it is the mean-gradient step
        assert r["diff_to_g1"] > 100 * r["diff"], r  # not just one replica's gradient (nor the sum)
        assert abs(r["loss"] - r["ref_loss"]) < 1e-5, r


@pytest.mark.slow
def test_mirrored_training_checkpoints_and_resumes_like_an_uninterrupted_run(folder, tmp_path):
    out = _run_script(
        tmp_path,
        "mirrored_train.py",
        """
        from metalite.training import distribute
        from metalite.training.trainer import Interrupted, train
        folder, tmp = sys.argv[1], sys.argv[2]
        real, calls = distribute.DistributedLearner.step, []

        def ctrl_c_at_step_5(self, sampler):  # as if Ctrl-C were pressed during the 5th step
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return real(self, sampler)
        s = {"data": "folder:" + folder, "algorithm": "anil", "ways": 3, "shots": 1, "queries": 2, "steps": 6,
             "val_every": 2, "checkpoint_every": 2, "val_episodes": 5, "val_ways": 2, "strategy": "mirrored",
             "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 8},
             "head": {"hidden": [8], "activation": "linear"}, "hparams": {"inner_steps": 1}}
        logs = []
        distribute.DistributedLearner.step = ctrl_c_at_step_5
        try:
            train(tmp + "/a", s, progress=False, log=logs.append)
        except Interrupted as e:
            logs.append(str(e))
        distribute.DistributedLearner.step = real
        train(tmp + "/a", {}, resume=True, progress=False, log=logs.append)
        train(tmp + "/b", s, progress=False, log=logs.append)
        print("RESULT " + json.dumps(logs))
    """,
        folder,
        tmp_path,
    )
    logs = json.loads(out.split("RESULT ", 1)[1])
    assert any("MirroredStrategy: 2 replica(s)" in m for m in logs), logs
    assert any(m.startswith("interrupted at step 4") for m in logs), logs
    assert any(m.startswith("resumed from step 4") for m in logs), logs
    run = json.loads((tmp_path / "a" / "checkpoints" / "run.json").read_text())
    assert run["strategy"] == "mirrored" and run["steps"] == 6
    # 4 steps, Ctrl-C, resume to 6 == 6 steps in one go (weights, optimizer state, sampler state all restored)
    import numpy as np

    from metalite.export.tfcompat import tf

    a = tf.train.load_checkpoint(str(tmp_path / "a" / "checkpoints" / "ckpt-6"))
    b = tf.train.load_checkpoint(str(tmp_path / "b" / "checkpoints" / "ckpt-6"))
    names = [
        n
        for n in a.get_variable_to_shape_map()
        if "/.ATTRIBUTES/VARIABLE_VALUE" in n and not n.startswith("save_counter")
    ]
    assert any("backbone" in n for n in names) and any("optimizer" in n for n in names)
    for n in names:
        np.testing.assert_allclose(
            a.get_tensor(n), b.get_tensor(n), rtol=1e-4, atol=1e-5, err_msg=n
        )
    assert (tmp_path / "a" / "config.json").exists()


WORKER = textwrap.dedent("""
    import json, os, sys
    index, ports, out, folder, steps, resume = sys.argv[1:7]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
                                          "task": {"type": "worker", "index": int(index)}})
    from metalite.training.trainer import train
    s = {"data": "folder:" + folder, "algorithm": "protonet", "ways": 3, "shots": 1, "queries": 2,
         "steps": int(steps), "val_every": 2, "checkpoint_every": 2, "val_episodes": 5, "val_ways": 2,
         "strategy": "multiworker", "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 8},
         "head": {"hidden": [8], "activation": "linear"}}
    log = lambda m: print(m, flush=True)
    if resume == "1":
        train(out, {"steps": int(steps), "strategy": "multiworker"}, resume=True, progress=False, log=log)
    else:
        train(out, s, progress=False, log=log)
    print("WORKER DONE", flush=True)
""")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_workers(tmp_path, folder, out, steps, resume):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ports = ",".join(map(str, _free_ports(2)))
    wtmp = tmp_path / "worker-tmp"
    wtmp.mkdir(exist_ok=True)
    env = _env(tmp_path, TMPDIR=str(wtmp))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(i),
                ports,
                str(out),
                str(folder),
                str(steps),
                "1" if resume else "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:  # a worker whose peer died waits forever in a collective: end it
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, o in zip(procs, outputs):
        assert p.returncode == 0 and "WORKER DONE" in o, o[-6000:]
    assert not list(wtmp.iterdir()), list(wtmp.iterdir())  # non-chief temp dirs removed
    return outputs


@pytest.mark.slow
def test_two_workers_on_localhost_train_in_sync_and_resume(folder, tmp_path):
    out = tmp_path / "m"
    logs = _run_workers(tmp_path, folder, out, 3, resume=False)
    digests = [
        re.findall(r"final weights digest (\w+) after step 3 \(episodes per step: 2\)", o)
        for o in logs
    ]
    assert digests[0] and digests[0] == digests[1], logs  # both workers hold bit-identical weights
    assert "worker 0 (chief)" in logs[0] and "worker 1" in logs[1] and "(chief)" not in logs[1]
    ck = out / "checkpoints"
    assert (
        (ck / "ckpt-3.index").exists()
        and (ck / "sampler-3.json").exists()
        and (out / "config.json").exists()
    )
    assert json.loads((ck / "run.json").read_text())["strategy"] == "multiworker"

    logs = _run_workers(tmp_path, folder, out, 5, resume=True)
    assert all("resumed from step 3" in o for o in logs), logs
    digests = [re.findall(r"final weights digest (\w+) after step 5", o) for o in logs]
    assert digests[0] and digests[0] == digests[1], logs
    assert (ck / "ckpt-5.index").exists()


def test_fomaml_and_reptile_are_refused_under_a_strategy(folder, tmp_path):
    from metalite.tools.cli import main

    for algorithm in ("fomaml", "reptile"):
        res = CliRunner().invoke(
            main,
            [
                "train",
                "--data",
                f"folder:{folder}",
                "--algorithm",
                algorithm,
                "--strategy",
                "mirrored",
                "--out",
                str(tmp_path / "x"),
            ],
        )
        assert (
            res.exit_code != 0
            and "--strategy mirrored supports protonet and anil only" in res.output
        ), res.output
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
