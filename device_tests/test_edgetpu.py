"""The Edge TPU path on a machine without the chip: only libedgetpu is missing."""

import json

import numpy as np
import pytest

import device_bundles as bundlelib
from devicekit import run_script

pytestmark = pytest.mark.device  # every test here needs a device environment


@pytest.fixture(scope="session")
def edgetpu_result(venvs, bundle, task, tmp_path_factory):
    tpu = bundlelib.with_edgetpu_model(bundle, tmp_path_factory.mktemp("tpu") / "bundle")
    p = run_script(venvs("tflite"), "edgetpu_run.py", [tpu, bundle, task / "task.npz"])
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_libedgetpu_really_absent(edgetpu_result):
    assert edgetpu_result["libedgetpu_found"] is None


def test_auto_falls_back_with_one_warning(edgetpu_result):
    r = edgetpu_result["tpu-auto"]
    assert r.get("device") == "cpu", r
    assert len(r["warnings"]) == 1 and r["warnings"][0]["is_fallback"], r["warnings"]
    msg = r["warnings"][0]["message"]
    assert "libedgetpu" in msg and "CPU" in msg, msg
    assert r["warnings_after_init"] == 0, "the fallback warning must come once, not per call"
    # and it predicts exactly as the plain bundle on the CPU
    assert np.array_equal(np.array(r["proba"]), np.array(edgetpu_result["plain-cpu"]["proba"]))


def test_edgetpu_delegate_is_a_clear_error(edgetpu_result):
    r = edgetpu_result["tpu-edgetpu"]
    assert r.get("is_delegate_error"), r
    assert (
        "\n" not in r["message"] and "libedgetpu" in r["message"] and "install" in r["message"]
    ), r["message"]
    r = edgetpu_result["plain-edgetpu"]
    assert r.get("is_delegate_error"), r
    assert "backbone_edgetpu.tflite" in r["message"] and "\n" not in r["message"], r["message"]


def test_cpu_and_plain_bundle_do_not_warn(edgetpu_result):
    for key in ("tpu-cpu", "plain-cpu", "plain-auto"):
        r = edgetpu_result[key]
        assert r.get("device") == "cpu" and r["warnings"] == [], (key, r)
