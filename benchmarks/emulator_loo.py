"""The Performance Emulator against measurement, leave-one-out: predicted vs measured secure-world compute.

    python benchmarks/emulator_loo.py [--models lenet5,vgg7,squeezenet,resnet50,inception_v1,densenet121]
                                      [--channels 2] [--iters 30]

Per model: mirrornet (pipeline, random CPM weights) -> split -> the CPM's C at the TA's flags
(mirrorc.profile.TA_HOST_CFLAGS). Measured: CPU us per batch-1 inference of the release C (no timers;
fastest of 5). The per-layer times come from the profiling build (lower(profile=True): a timer around
every scheduled node, fastest of --iters), with every non-conv/dense node charged to the compute layer
before it (mirrorc.profile.charge_to_compute). Predicted: the conv and dense lines (paper Eq. 4, 5)
fitted on the OTHER models' layers only, summed over this model's conv and dense layers. The world
switches are not in either figure (`mirrorc profile` fits them separately)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from c_lowering import model_path  # noqa: E402
from record import write_results  # noqa: E402

from mirrorc import profile  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.plan import emulator  # noqa: E402
from mirrorc.plan.layers import Layer  # noqa: E402
from passes.split import split  # noqa: E402


def loo_device(steps: list[dict]) -> emulator.Device:
    """The emulator's Device for the profile fitted on `steps` (no transfer term)."""
    terms = profile.fit_terms(steps)
    raw = profile.profile_json(terms, emulator.Linear(0.0, 0.0), name="loo", source="emulator_loo")
    return emulator.device_from_json(raw, "emulator_loo")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet5,vgg7,squeezenet,resnet50,inception_v1,densenet121")
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    names = args.models.split(",")
    samples: dict[str, list[dict]] = {}
    nodes: dict[str, list[Layer]] = {}
    measured: dict[str, float] = {}
    step_sum: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            mirrornet, _ = build_mirrornet(model_path(name, Path(tmp)), channels=args.channels)
            _, secure = split(mirrornet)
            steps = profile.measure_steps(secure, name, args.iters)
            samples[name], nodes[name] = steps, profile.step_layers(secure)
            step_sum[name] = sum(s["us"] for s in steps)
            measured[name] = profile.measure_total_us(secure, name, args.iters)
            print(f"measured {name}: {len(steps)} nodes", flush=True)
    rows = []
    for name in names:
        others = [s for other in names if other != name for s in samples[other]]
        device = loo_device(others)
        predicted = sum(device.layer_us(x) for x in nodes[name])
        rows.append(
            {
                "model": name,
                "nodes": len(nodes[name]),
                "measured_us": measured[name],
                "layer_sum_us": step_sum[name],
                "predicted_us": predicted,
                "error_pct": 100 * (predicted - measured[name]) / measured[name],
                "fit": {"conv": dataclasses.asdict(device.conv), "dense": dataclasses.asdict(device.dense)},
            }
        )
    print(f"{'model':>12} {'nodes':>6} {'measured us':>12} {'sum of layers':>14} {'predicted us':>13} {'error':>8}")
    for r in rows:
        print(
            f"{r['model']:>12} {r['nodes']:>6} {r['measured_us']:>12.1f} {r['layer_sum_us']:>14.1f} "
            f"{r['predicted_us']:>13.1f} {r['error_pct']:>+7.1f}%"
        )
    print(f"largest |error|: {max(abs(r['error_pct']) for r in rows):.1f}%")
    write_results(
        "emulator_loo",
        "Performance Emulator leave-one-out: CPM compute at the TA's flags, predicted by a profile fitted "
        "on the other models' per-node times, against the measured release C",
        {
            "setup": {"channels": args.channels, "iters": args.iters, "cflags": list(profile.TA_HOST_CFLAGS)},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
