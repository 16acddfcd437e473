"""Helpers shared by the device tests (a uniquely named module, so `tests/` may have its own conftest)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import envs

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
PROFILES = json.loads((HERE / "profiles.json").read_text())["profiles"]
AGREEMENT = json.loads((HERE / "profiles.json").read_text())["agreement"]


def record(results_dir: Path, name: str, data: dict) -> None:
    """Write measured numbers as JSON and print them (visible with -s or in the report)."""
    text = json.dumps(data, indent=1, sort_keys=True)
    (results_dir / f"{name}.json").write_text(text)
    extra = os.environ.get("METALITE_DEVICE_RESULTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        (Path(extra) / f"{name}.json").write_text(text)
    envs.log(f"{name}: {json.dumps(data, sort_keys=True)}")


def run_script(
    python,
    script: str,
    args: list,
    *,
    timeout: float = 600,
    preexec_fn=None,
    env=None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    cmd = [str(python), str(SCRIPTS / script), *map(str, args)]
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
        env=env,
        cwd="/",
    )  # not the repo: its metalite/ would shadow
    if check and p.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}",
            pytrace=False,
        )
    return p


def load_result(out: Path) -> dict:
    """device_run.py's result.json, with its arrays (``proba_array``, ``embeddings``) and ``out_dir``, where the
    run also saved its state (``state.npz``)."""
    import numpy as np

    res = json.loads((out / "result.json").read_text())
    res["out_dir"] = Path(out)
    with np.load(out / "result.npz") as z:
        res["proba_array"], res["embeddings"] = z["proba"], z["embeddings"]
    return res


def output_scale(bundle_dir: Path) -> float:
    return float(
        json.loads((bundle_dir / "manifest.json").read_text())["output"]["quantization"]["scale"]
    )


def agreement(ref: dict, other: dict, scale: float) -> dict:
    """How far two runs on the same inputs are apart (see profiles.json "agreement")."""
    import numpy as np

    pa, pb = ref["proba_array"], other["proba_array"]
    same = np.array([a == b for a, b in zip(ref["pred"], other["pred"])])
    top2 = np.sort(pa, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    return {
        "n": int(len(same)),
        "labels_agree": float(same.mean()),
        "flips_gaps": [float(g) for g in gap[~same]],
        "proba_max_abs": float(np.abs(pa - pb).max()),
        "embedding_max_lsb": float(np.abs(ref["embeddings"] - other["embeddings"]).max() / scale),
    }


def assert_agreement(a: dict, what: str, trained: bool, same_kernels: bool = True) -> None:
    """The criterion of profiles.json "agreement"; the overall label rate applies to trained bundles
    (the untrained tiny test bundle has many near-ties; there only the near-tie rule holds), and is
    looser between different interpreters (different int8 kernels) than across architectures."""
    c = AGREEMENT
    problems = []
    need = c["labels_min_agreement"] if same_kernels else c["labels_min_agreement_other_kernels"]
    if trained and a["labels_agree"] < need:
        problems.append(f"labels agree on {a['labels_agree']:.3f} < {need}")
    if any(g > c["flip_max_top2_gap"] for g in a["flips_gaps"]):
        problems.append(
            f"a label differs where the reference was not a near-tie (top-2 gaps {a['flips_gaps']})"
        )
    if a["proba_max_abs"] > c["proba_max_abs"]:
        problems.append(f"probabilities differ by {a['proba_max_abs']:.4f} > {c['proba_max_abs']}")
    if a["embedding_max_lsb"] > c["embedding_max_lsb"] + 1e-3:
        problems.append(
            f"int8 embeddings differ by {a['embedding_max_lsb']:.2f} steps > {c['embedding_max_lsb']}"
        )
    assert not problems, f"{what}: " + "; ".join(problems) + f" ({a})"


def assert_colour_state(result: dict, task: Path) -> None:
    """The state a run of device_run.py saved from an RGB task keeps every support image as it was given:
    format 3, uint8 (n, H, W, 3), each class's rows the task's pixels (the task is at the bundle's size)."""
    import numpy as np

    from metalite.runtime.state import COLOR_STATE_FORMAT_VERSION, load_state

    assert result["state_format_version"] == COLOR_STATE_FORMAT_VERSION, result[
        "state_format_version"
    ]
    assert result["state_images_kept"] is True  # by the classifier the run loaded from that file
    st = load_state(result["out_dir"] / "state.npz")
    with np.load(task / "task.npz") as t:
        sx, sy = t["support_images"], [str(s) for s in t["support_labels"]]
    assert st.images is not None and st.images.dtype == np.uint8 and st.images.shape == sx.shape, (
        None if st.images is None else (st.images.dtype, st.images.shape)
    )
    for col, label in enumerate(st.classes):
        given = sx[[i for i, y in enumerate(sy) if y == label]]
        assert np.array_equal(st.images[st.support_labels == col], given), label
