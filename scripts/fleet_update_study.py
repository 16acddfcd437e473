"""Before and after ``metalite fleet update`` with its defaults on the shipped ``models/omniglot``, at full scale:
the table in docs/fleet.md ("On the shipped Omniglot model").

    python scripts/fleet_update_study.py ../shared/data/omniglot/images_background.zip --out /tmp/fleet-study

The scenario of ``tests/scenarios/test_fleet_update_shipped.py`` (``tests/fleet_scenario.py``) on the full background zip:
three devices, each taught ``--characters`` characters of each of two of its held-out alphabets (Arcadian,
Early Aramaic, Sanskrit), 2 drawings per character, checking 3 more and correcting the wrong answers, upload
through a real ``metalite serve``; ``fleet update --data omniglot:ZIP`` (the model's original data: 300 replayed
training classes, its validation alphabets, and for the no-damage check the five test alphabets no device
sent); the devices sync the new version. Then (``--rounds 2``) each checks 2 more drawings per character and
a second update starts from the float model the first kept. Reported per round: each device's right answers
on the drawings of 6 people it never saw (``fleet_scenario.HELD``) before and after, 600 paired 20-way 1-shot
episodes on those drawings of the fleet's characters (old and new bundle), the update's decision line with
the no-damage figure, and wall and CPU time. ``--out`` must be outside a git work tree (it holds a fleet root).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the scenario and the server helper the test uses

import fleet_scenario as fs  # noqa: E402

from fleetkit import Server  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the server, a subprocess update)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_update(root: Path, args: list, log: Path) -> tuple:
    """``metalite fleet update`` in a subprocess (TensorFlow's threads and memory end with it): (decision, s, CPU s)."""
    import subprocess

    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "ab") as err:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "metalite.tools.cli",
                "fleet",
                "update",
                "--root",
                str(root),
                *args,
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            check=True,
        ).stdout
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        json.loads(out),
        time.time() - t0,
        (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime),
    )


def pct(right_total) -> str:
    r, n = right_total
    return f"{r}/{n} ({100 * r / n:.1f}%)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "zip", type=Path, help="images_background.zip (Omniglot's 30 background alphabets)"
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="work directory (a fleet root and device homes)"
    )
    ap.add_argument(
        "--characters", type=int, default=18, help="characters of each alphabet a device learns"
    )
    ap.add_argument(
        "--rounds", type=int, choices=(1, 2), default=2, help="updates (the second chains)"
    )
    args = ap.parse_args()

    from metalite.fleet import FleetRoot, export_bundle, publish
    from metalite.pipelines.fleet_gate import paired_unseen
    from metalite.runtime.sync import parse_public_key
    from metalite.training.datasets import load_data

    t_start, c_start = time.time(), cpu_seconds()
    zip_path = args.zip.resolve()
    data = load_data(f"omniglot:{zip_path}", 28, "all")
    args.out.mkdir(parents=True, exist_ok=True)
    srv = Server(args.out / "root", args.out / "serve.log").start()
    report = {
        "command": " ".join(["python", *sys.argv]),
        "load_before": os.getloadavg(),
        "rounds": [],
    }
    try:
        fleet = FleetRoot(srv.root)
        publish(fleet, fs.SHIPPED, model_dir=fs.SHIPPED_FLOAT, note="shipped models/omniglot")
        key = parse_public_key(srv.public_key())
        devices = fs.start(
            fleet, srv.url, key, data, fs.assign(data, characters=args.characters), args.out
        )
        fleet_classes = sorted({c for d in devices for c in d.classes})
        held = fs.held_data(data, fleet_classes)
        update_args = [
            "--data",
            f"omniglot:{zip_path}",
        ]  # only the first: the kept float model records it
        for rnd in range(args.rounds):
            for d in devices:
                fs.check(d, data, rnd)
            before = [fs.held_correct(d, data) for d in devices]
            fs.sync_all(devices, srv.url, key)
            sent = fs.uploaded(fleet)
            m, wall, cpu = run_update(
                srv.root, update_args if rnd == 0 else [], args.out / "update.log"
            )
            row = {
                "round": rnd + 1,
                "uploaded_so_far": sent,
                "corrections": [d.corrections[-1] for d in devices],
                "before": before,
                "decision": m["decision"],
                "version": m["version"],
                "figures": m["figures"],
                "reason": m["reason"],
                "unseen": m["unseen"],
                "fleet_holdout": m["fleet_holdout"],
                "examples": m["examples"],
                "update_wall_s": round(wall),
                "update_cpu_s": round(cpu),
            }
            if m["decision"] == "published":
                results = fs.sync_all(devices, srv.url, key)
                row["switched"] = [r.update.status for r in results]
                row["after"] = [fs.held_correct(d, data) for d in devices]
                old = export_bundle(
                    fleet, m["version"] - 1, args.out / f"v{m['version'] - 1}-r{rnd}"
                )
                new = export_bundle(fleet, m["version"], args.out / f"v{m['version']}-r{rnd}")
                row["fleet_classes_20way1shot"] = paired_unseen([old, new], held, 20, 600, seed=1)
            report["rounds"].append(row)
            print(json.dumps(row, indent=1), flush=True)
            if m["decision"] != "published":
                break
    finally:
        srv.stop()
    report.update(
        wall_s=round(time.time() - t_start),
        cpu_s=round(cpu_seconds() - c_start),
        load_after=os.getloadavg(),
        fleet_classes=len(fleet_classes),
        characters=args.characters,
    )
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(table(report))


def table(report: dict) -> str:
    """The markdown table of docs/fleet.md."""
    lines = ["| round | | before | after |", "|---|---|---|---|"]
    for r in report["rounds"]:
        n = r["round"]
        for k, (b, a) in enumerate(zip(r["before"], r.get("after", [None] * len(r["before"])))):
            lines.append(
                f"| {n} | device pi-{k}: held-out drawings right | {pct(b)} | {pct(a) if a else '—'} |"
            )
        f = r.get("fleet_classes_20way1shot")
        if f:
            lines.append(
                f"| {n} | 20-way 1-shot on the fleet's {f['classes']} characters, held-out drawings "
                f"({f['episodes']} paired episodes) | {100 * f['current']:.2f}% | {100 * f['candidate']:.2f}% "
                f"(paired {100 * f['diff']:+.2f} ± {100 * f['ci95']:.2f} pt) |"
            )
        u = r["unseen"]
        lines.append(
            f"| {n} | no damage: 20-way 1-shot on {u['classes']} classes of alphabets no one sent "
            f"({u['episodes']} paired episodes) | {100 * u['current']:.2f}% | {100 * u['candidate']:.2f}% "
            f"(paired {100 * u['diff']:+.2f} ± {100 * u['ci95']:.2f} pt) |"
        )
        v = r["fleet_holdout"]
        lines.append(
            f"| {n} | gate: held-out fleet examples ({v['images']} images) | {100 * v['current']:.1f}% | "
            f"{100 * v['candidate']:.1f}% |"
        )
        lines.append(
            f"| {n} | decision | {r['decision']} v{r['version']}: {r['reason']} | "
            f"update {r['update_wall_s']} s wall, {r['update_cpu_s']} s CPU |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
