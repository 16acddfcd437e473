"""Device profiles (profiles.json): the runtime loads, adapts and predicts within each device's thread
count, address-space cap (RLIMIT_AS, set in the child before exec) and peak-RSS budget."""

import resource

import pytest

import device_bundles as bundlelib
from devicekit import PROFILES, load_result, record, run_script

pytestmark = pytest.mark.device  # every test here needs a device environment


def _cap(mb):
    def preexec():
        limit = int(mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile(profile, venvs, bundle, task, tmp_path, results_dir):
    prof = PROFILES[profile]
    b = bundle
    if prof["edgetpu_bundle"]:
        b = bundlelib.with_edgetpu_model(bundle, tmp_path / "bundle-edgetpu")
    out = tmp_path / "out"
    p = run_script(
        venvs(prof["interpreter"]),
        "device_run.py",
        [
            "--bundle",
            b,
            "--task",
            task / "task.npz",
            "--out",
            out,
            "--threads",
            prof["threads"],
            "--delegate",
            prof["delegate"],
        ],
        preexec_fn=_cap(prof["address_space_mb"]),
        check=False,
    )
    assert p.returncode == 0, (
        f"{profile}: the runtime failed under RLIMIT_AS={prof['address_space_mb']} MB "
        f"with {prof['threads']} threads:\n{p.stderr[-3000:]}"
    )
    r = load_result(out)
    assert r["state_roundtrip"] and len(r["pred"]) == 200
    if prof["edgetpu_bundle"]:
        assert (
            r["device"] == "cpu"
            and len(r["warnings"]) == 1
            and "EdgeTPUFallbackWarning" in r["warnings"][0]
        )
    assert r["vm_peak_mb"] <= prof["address_space_mb"]
    data = {
        "profile": profile,
        "bundle": b.name,
        "interpreter": r["backend"],
        "threads": prof["threads"],
        "address_space_cap_mb": prof["address_space_mb"],
        "vm_peak_mb": round(r["vm_peak_mb"], 1),
        "peak_rss_mb": round(r["peak_rss_mb"], 1),
        "peak_rss_budget_mb": prof["peak_rss_budget_mb"],
        "ms_per_image_x86": round(r["ms_per_image"], 3),
    }
    record(results_dir, f"profile-{profile}", data)
    assert r["peak_rss_mb"] <= prof["peak_rss_budget_mb"], (
        f"{profile}: peak RSS over budget: {data}"
    )


def test_memory_cap_is_enforced(venvs, bundle, task, tmp_path):
    """The cap mechanism itself works: far below what the runtime needs, the same run fails."""
    p = run_script(
        venvs("tflite"),
        "device_run.py",
        ["--bundle", bundle, "--task", task / "task.npz", "--out", tmp_path, "--skip-extras"],
        preexec_fn=_cap(48),
        check=False,
    )
    assert p.returncode != 0, (
        "a 48 MB address-space cap did not stop the run: RLIMIT_AS is not in effect"
    )
    signs = ("memoryerror", "memory", "failed to map", "cannot allocate")
    assert p.returncode < 0 or any(s in p.stderr.lower() for s in signs), p.stderr[-2000:]
