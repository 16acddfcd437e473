"""Speed reports name the processor they were taken on: model, vendor, ISA features, interpreter and delegate."""

from __future__ import annotations

import json

from repo_paths import REPO

from metalite.bench.machine import machine_info, processor, processor_text

XEON = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
    "flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni amx_int8\n\n"
    "processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: other\n"
)
PI4 = (
    "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n"
)
PI5 = PI4.replace("0xd08", "0xd0b").replace("asimd ", "asimd asimdhp asimddp ")


def test_processor_names_an_x86_cpu_and_its_int8_features():
    p = processor(XEON)
    assert (
        p["model"].startswith("Intel(R) Xeon(R) Platinum 8481C") and p["vendor"] == "GenuineIntel"
    )
    assert p["isa"] == [
        "sse4_1",
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "amx_int8",
    ]


def test_processor_names_a_cortex_a72_and_tells_it_from_a_dotprod_core():
    a72, a76 = processor(PI4), processor(PI5)
    assert a72["model"] == "ARM Cortex-A72" and a72["vendor"] == "ARM" and a72["isa"] == ["asimd"]
    assert (
        a76["model"] == "ARM Cortex-A76" and "asimddp" in a76["isa"] and "asimddp" not in a72["isa"]
    )


def test_processor_without_cpuinfo_says_features_are_unknown():
    p = processor("")
    assert p["isa"] is None and p["model"]
    assert "ISA features unknown" in processor_text({"processor": p})


def test_machine_info_names_this_processor_and_the_interpreter_stack():
    m = machine_info()
    json.dumps(m)  # goes into report.json as is
    text = processor_text(m)
    assert m["processor"]["model"] in text and m["processor"]["arch"] in text
    stack = m["interpreter_stack"]
    assert stack["name"] in ("ai_edge_litert", "tflite_runtime", "tensorflow"), stack
    assert stack["name"] in text and "XNNPACK" in stack["cpu_delegate"]
    if m["processor"]["isa"]:
        assert " ".join(m["processor"]["isa"]) in text


def test_readme_bench_line_and_report_name_the_processor():
    from metalite.bench.machine import machine_lines
    from metalite.bench.readme import readme_section

    m = {
        "cpu": "x",
        "processor": processor(XEON),
        "cores": 2,
        "python": "3.11",
        "interpreter_stack": {
            "name": "ai_edge_litert",
            "version": "2.3.0",
            "cpu_delegate": "XNNPACK, int8 path: d",
        },
    }
    report = {
        "mode": "full",
        "machine": m,
        "latency": {"load": {"loadavg_before": [1.0, 1.0, 1.0]}},
    }
    for text in (readme_section(report, plot=None), "\n".join(machine_lines(report))):
        assert "Intel(R) Xeon(R) Platinum 8481C" in text and "avx512_vnni" in text
        assert "ai_edge_litert 2.3.0 with XNNPACK" in text


# ----------------------------------------------------------------------------- batch-1 runtime overhead
def test_uint8_gray_images_at_model_size_give_the_same_floats_as_the_general_steps():
    import numpy as np

    from metalite.runtime import preprocess as pre

    rng = np.random.default_rng(3)
    for invert in (True, False):
        for shape in [(1, 28, 28), (5, 28, 28), (2, 28, 28, 1)]:
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            a.flat[:2] = (0, 255)
            fast = pre.to_model_input(a, (28, 28), invert)
            slow = pre._convert(a, (28, 28), invert, 1, pre.BACKGROUND)
            assert fast.dtype == np.float32 and fast.shape == (shape[0], 28, 28, 1)
            np.testing.assert_array_equal(fast, slow)
            fast[0, 0, 0, 0] = 7.0  # a fresh array: the table is not handed out
            np.testing.assert_array_equal(
                pre.to_model_input(a, (28, 28), invert)[0, 0, 0, 0], slow[0, 0, 0, 0]
            )


def test_in_place_quantize_and_dequantize_match_the_textbook_formulas():
    import numpy as np

    from metalite.runtime.embedder import dequantize, quantize

    x = np.random.default_rng(4).uniform(-0.5, 1.5, (3, 28, 28, 1)).astype(np.float32)
    x.flat[:4] = (0.5 / 255, 1.5 / 255, -10.0, 10.0)  # halves round to even; out of range clipped
    scale, zp = 1 / 255, -128
    ref = np.clip(np.round(x / np.float32(scale)) + zp, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(quantize(x, scale, zp, np.int8), ref)
    q = np.arange(-128, 128, dtype=np.int8).reshape(4, 64)
    np.testing.assert_array_equal(
        dequantize(q, 0.044, -11),
        (np.float32(0.044) * (q.astype(np.float32) - np.float32(-11))).astype(np.float32),
    )


def test_embed_without_cache_equals_embed_with_cache_and_the_chunked_path(tmp_path):
    """The batch-1 shortcuts (no key when the cache is off, one invoke's output used as is) change nothing."""
    import numpy as np

    from metalite.runtime.classifier import FewShotClassifier

    bundle = REPO / "models" / "omniglot"
    imgs = np.random.default_rng(5).integers(0, 256, (37, 28, 28), dtype=np.uint8)
    plain = FewShotClassifier(str(bundle), delegate="cpu", cache_size=0, tta=0)
    cached = FewShotClassifier(
        str(bundle), delegate="cpu", tta=0, batch_size=8
    )  # 37 = 4 chunks of 8 + 5
    one = np.vstack([plain.embed(im) for im in imgs[:3]])
    np.testing.assert_array_equal(one, plain.embed(imgs)[:3])
    np.testing.assert_array_equal(plain.embed(imgs), cached.embed(imgs))
    assert cached.embedder.invocations == 5 and plain.cache.misses == 3 + 37 + 37
    np.testing.assert_array_equal(
        plain.embed(imgs[:1].astype(np.float32)), one[:1]
    )  # the general steps
