"""Speed reports name the processor (issue 24): model, vendor, ISA features, interpreter and delegate."""
from __future__ import annotations

import json

from metalite.tools.bench_machine import machine_info, processor, processor_text

XEON = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
        "flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni amx_int8\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: other\n")
PI4 = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
       "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n")
PI5 = PI4.replace("0xd08", "0xd0b").replace("asimd ", "asimd asimdhp asimddp ")


def test_processor_names_an_x86_cpu_and_its_int8_features():
    p = processor(XEON)
    assert p["model"].startswith("Intel(R) Xeon(R) Platinum 8481C") and p["vendor"] == "GenuineIntel"
    assert p["isa"] == ["sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "amx_int8"]


def test_processor_names_a_cortex_a72_and_tells_it_from_a_dotprod_core():
    a72, a76 = processor(PI4), processor(PI5)
    assert a72["model"] == "ARM Cortex-A72" and a72["vendor"] == "ARM" and a72["isa"] == ["asimd"]
    assert a76["model"] == "ARM Cortex-A76" and "asimddp" in a76["isa"] and "asimddp" not in a72["isa"]


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
    from metalite.tools.bench_markdown import machine_lines
    from metalite.tools.readme_bench import readme_section

    m = {"cpu": "x", "processor": processor(XEON), "cores": 2, "python": "3.11",
         "interpreter_stack": {"name": "ai_edge_litert", "version": "2.3.0", "cpu_delegate": "XNNPACK, int8 path: d"}}
    report = {"mode": "full", "machine": m, "latency": {"load": {"loadavg_before": [1.0, 1.0, 1.0]}}}
    for text in (readme_section(report, plot=None), "\n".join(machine_lines(report))):
        assert "Intel(R) Xeon(R) Platinum 8481C" in text and "avx512_vnni" in text
        assert "ai_edge_litert 2.3.0 with XNNPACK" in text
