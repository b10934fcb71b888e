"""Issue 5 experiment: a "secure stem". The CPM also receives the raw input image (normal -> secure only,
so the one-way property holds) and runs its own copy of the first stage at width W (Conv 5x5 + ReLU +
MaxPool on the raw image); its W channels are concatenated with the tapped channels of tap 1 before
the CPM's first conv. The backbone can then be trained to be a poor initialisation for a thief
(backbone penalty, probe-adversarial training of mirrorc/attack/defense.py, or not trained at all)
while the CPM keeps accuracy from its own stem. For each W and backbone-training setting: MirrorNet,
backbone-alone and unprotected test accuracy, the CPM's MACs (TEE cost) against the backbone's, and
the head start at the attack budget (best attack - from scratch, mirrorc.attack.thief).

    OMP_NUM_THREADS=1 python benchmarks/attack_stem.py --threads 1 --epochs 3 --limit-train 20000 \
        --widths 0,2,4,6 --settings plain,probe1 --seeds 1

Settings: '+'-joined tokens: `plain`, `pen<w>` (backbone penalty "wrong", weight w), `probe<w>`
(probe-adversarial training, weight w), `frozen` (backbone kept at its random initial weights; only
the CPM is trained). A prototype: the stem is added to the compiler's mirrornet.onnx by a graph edit
here (the raw image crosses as an extra tap 'mirrorc_tap0' = Gather(input, [0])); passes.split and
the TA lowering do not know it, so each build writes its own normal.onnx and the probe trainer is
given a stem-aware secure part. Builds go to OUT/<name>/ (`--reuse` takes a trained one from there),
every row to OUT/summary.json.

A second from-scratch baseline, `scratch_default`: mirrorc.attack.thief's `scratch` starts from He-normal
weights with zero biases, but the compiler's own backbone init (passes/mirror.py, init="random": PyTorch's
default uniform) is a better start on 600 images, and a thief who steals nothing can use it too. So
every attack seed also fine-tunes an *untrained* backbone of that init (another seed than the build's),
and the head start is shown against attack.py's baseline and against the better of the two. (Since
this experiment, attack.py's `scratch` itself chooses between the two draws on the attacker's
validation part.)

The table goes to results/attack_stem.json; what was measured is in docs/RESULTS.md. Nothing reached
head start <= 2 at MirrorNet cost <= 0.5 with a trained backbone; the stem buys less per MAC than a
wider C, and a frozen backbone gives no head start whatever the CPM, so the frozen C=8 CPM without a
stem became `mirrorc compile --protect random-backbone` (mirrorc/train/protect.py, measured by
benchmarks/attacks.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_results  # noqa: E402

from passes import contract  # noqa: E402

RAW_TAP = contract.tap_name(0)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse_setting(name: str) -> dict:
    s = {"penalty": 0.0, "probe": 0.0, "frozen": False}
    for token in name.split("+"):
        if token == "plain":
            continue
        if token == "frozen":
            s["frozen"] = True
        elif token.startswith("pen"):
            s["penalty"] = float(token[3:])
        elif token.startswith("probe"):
            s["probe"] = float(token[5:])
        else:
            raise SystemExit(f"--settings: unknown token '{token}' (plain, pen<w>, probe<w>, frozen)")
    if s["frozen"] and (s["penalty"] or s["probe"]):
        raise SystemExit(f"--settings: '{name}': frozen trains no backbone weight, nothing to penalise")
    return s


# --------------------------------------------------------------------------- the stem (graph edit)


def _world(node: onnx.NodeProto, world: str, stage: int = 1) -> onnx.NodeProto:
    node.metadata_props.add(key=contract.META_WORLD, value=world)
    node.metadata_props.add(key=contract.META_STAGE, value=str(stage))
    return node


def add_stem(mirrornet: onnx.ModelProto, width: int, seed: int = 0) -> onnx.ModelProto:
    """A copy of a LeNet-style mirrornet.onnx whose CPM has a secure stem of `width` channels: a copy of
    the backbone's first stage (the nodes up to tap 1, same attributes, narrowed to `width`) run on the
    raw input inside the secure world, concatenated with the tap-1 channels before the first CPM conv,
    whose input channels are widened to match. width 0 returns the model unchanged."""
    if width == 0:
        return mirrornet
    from mirrorc.attack.thief import _fresh_value

    model = onnx.ModelProto()
    model.CopyFrom(mirrornet)
    g = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    taps = json.loads(meta[contract.META_TAPS])
    tap1 = next(t for t in taps if t["index"] == 1)
    producer = {o: n for n in g.node for o in n.output}
    # the backbone's first stage: the chain input -> ... -> tap-1 tensor
    stage, name = [], tap1["tensor"]
    inp = g.input[0].name
    while name != inp:
        node = producer[name]
        stage.insert(0, node)
        name = node.input[0]
    inits = {t.name: t for t in g.initializer}
    rng = np.random.default_rng([seed, width])
    new_nodes, new_inits, x = [], [], RAW_TAP
    new_nodes.append(
        _world(
            helper.make_node("Gather", [inp, "mirrorc/select0/indices"], [RAW_TAP], axis=1, name="mirrorc/select0"),
            "normal",
        )
    )
    new_inits.append(numpy_helper.from_array(np.array([0], np.int64), "mirrorc/select0/indices"))
    for node in stage:
        out = f"cpm/stem/{node.name}_out"
        ins = [x]
        if node.op_type == "Conv":
            w = numpy_helper.to_array(inits[node.input[1]])
            shape = (width, *w.shape[1:])
            ins += [f"cpm/stem/{node.name}/weight", f"cpm/stem/{node.name}/bias"]
            new_inits += [
                numpy_helper.from_array(_fresh_value(shape, node, 1, rng), ins[1]),
                numpy_helper.from_array(np.zeros(width, np.float32), ins[2]),
            ]
        elif len(node.input) > 1:
            raise SystemExit(f"add_stem: first-stage node '{node.name}' ({node.op_type}) not supported")
        copy = helper.make_node(node.op_type, ins, [out], name=f"cpm/stem/{node.name}")
        copy.attribute.extend(node.attribute)
        new_nodes.append(_world(copy, "secure"))
        x = out
    new_nodes.append(
        _world(
            helper.make_node("Concat", [tap1["selected"], x], ["cpm/stem/m1"], axis=1, name="cpm/stem/concat"), "secure"
        )
    )
    # the first CPM node that reads tap 1 now reads the concatenation, with a wider weight
    first = next(n for n in g.node if n.name.startswith("cpm/") and tap1["selected"] in n.input)
    if first.op_type != "Conv":
        raise SystemExit(f"add_stem: the CPM reads tap 1 with a {first.op_type}, not a Conv")
    w_init = inits[first.input[1]]
    oc, ic, kh, kw = w_init.dims
    wide = _fresh_value((oc, ic + width, kh, kw), first, 1, rng)
    w_init.CopyFrom(numpy_helper.from_array(wide, w_init.name))
    first.input[0] = "cpm/stem/m1"
    nodes = list(g.node)
    at = nodes.index(first)
    del g.node[:]
    g.node.extend(nodes[:at] + new_nodes + nodes[at:])
    g.initializer.extend(new_inits)
    taps.insert(
        0,
        {
            "index": 0,
            "tensor": inp,
            "selected": RAW_TAP,
            "channels": [0],
            "shape": [1, *[d.dim_value for d in g.input[0].type.tensor_type.shape.dim][2:]],
            "bytes": 0,
            "raw_input": True,
        },
    )
    for p in model.metadata_props:
        if p.key == contract.META_TAPS:
            p.value = json.dumps(taps)
    model.metadata_props.add(key="mirrorc.stem", value=json.dumps({"width": width}))
    onnx.checker.check_model(model)
    return model


def crossing(model: onnx.ModelProto) -> list[str]:
    """What the secure world reads: every tap (with the raw image when there is a stem), then the logits."""
    taps = json.loads({p.key: p.value for p in model.metadata_props}[contract.META_TAPS])
    return [t["selected"] for t in sorted(taps, key=lambda t: t["index"])] + [contract.BACKBONE_LOGITS]


def _extractor(model: onnx.ModelProto) -> onnx.utils.Extractor:
    return onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model, strict_mode=True))


def normal_part(model: onnx.ModelProto) -> onnx.ModelProto:
    names = crossing(model)
    return _extractor(model).extract_model([model.graph.input[0].name], names[-1:] + names[:-1])


def secure_part(model: onnx.ModelProto) -> onnx.ModelProto:
    """The CPM as a model of (taps incl. the raw image, backbone_logits) -> mirrornet_logits, for the
    probe trainer (passes.split refuses a secure node that reads the raw input)."""
    return _extractor(model).extract_model(crossing(model), [contract.MIRRORNET_LOGITS])


def mac_ratio(model: onnx.ModelProto) -> tuple[int, int]:
    from mirrorc.plan.layers import layers

    all_layers = layers(model)
    cpm = sum(layer.macs for layer in all_layers if layer.name.startswith("cpm/"))
    return cpm, sum(layer.macs for layer in all_layers if not layer.name.startswith("cpm/"))


# --------------------------------------------------------------------------- training


def train_mirrornet(initial: onnx.ModelProto, dataset, setting: dict, epochs: int, seed: int) -> onnx.ModelProto:
    from mirrorc.attack import defense
    from mirrorc.attack import thief as atk
    from mirrorc.train.loop import TrainConfig, train

    if setting["frozen"]:  # only the CPM learns; the backbone keeps its random initial weights
        steps = epochs * math.ceil(len(dataset.y_train) / 128)
        return atk.train(
            initial,
            contract.MIRRORNET_LOGITS,
            lambda n: n.startswith("cpm/"),
            dataset.x_train,
            dataset.y_train,
            lr=1e-3,
            steps=steps,
            batch=128,
            seed=seed,
            desc="mirrornet (frozen)",
        )
    if setting["probe"]:
        defense.secure_part = secure_part  # the stem-aware secure part (see the module docstring)
        config = defense.ProbeConfig(
            epochs=epochs, seed=seed, backbone_penalty=setting["penalty"], probe_weight=setting["probe"]
        )
        return defense.train_against_probes(initial, dataset.x_train, dataset.y_train, config)
    config = TrainConfig(epochs=epochs, seed=seed, backbone_penalty=setting["penalty"])
    return train(
        initial,
        dataset.x_train,
        dataset.y_train,
        config,
        logits=contract.MIRRORNET_LOGITS,
        backbone_logits=contract.BACKBONE_LOGITS,
        progress_desc="mirrornet",
    ).model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/attack-stem", help="folder for builds and summary.json")
    ap.add_argument("--model", default=str(ROOT / "examples" / "models" / "lenet5.onnx"))
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=os.environ.get("MIRRORC_DATA", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--channels", type=int, default=2, help="C of the CPM")
    ap.add_argument("--widths", default="0,2,4,6", help="stem widths W (0: no stem, today's CPM)")
    ap.add_argument("--settings", default="plain,probe1", help="backbone training settings (see above)")
    ap.add_argument("--epochs", type=int, default=5, help="MirrorNet and unprotected training epochs")
    ap.add_argument("--limit-train", type=int, default=None, help="train on the first N training images only")
    ap.add_argument("--budget", type=int, default=600, help="the attacker's labelled images")
    ap.add_argument("--seeds", type=int, default=1, help="attack seeds")
    ap.add_argument("--attacks", default="as_is,finetune_all,retrain_head,replace_cpm,scratch")
    ap.add_argument("--attack-epochs", type=int, default=20)
    ap.add_argument("--min-steps", type=int, default=500)
    ap.add_argument("--lr-grid", default="3e-4,1e-3,3e-3")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--reuse", action="store_true", help="take OUT/<name>/mirrornet.onnx when present")
    args = ap.parse_args(argv)

    os.environ["MIRRORC_THREADS"] = str(args.threads)  # mirrorc.train.loop sets torch's threads from it
    import torch

    torch.set_num_threads(args.threads)
    from mirrorc.attack import thief as atk
    from mirrorc.pipeline import build_mirrornet
    from mirrorc.train.data import load_dataset
    from mirrorc.train.loop import TrainConfig, logits_tensor, same_init, train

    began = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base, _info = build_mirrornet(args.model, channels=args.channels, seed=0)
    input_shape = tuple(d.dim_value or 1 for d in base.graph.input[0].type.tensor_type.shape.dim)
    dataset = load_dataset(
        args.data,
        data_dir=args.data_dir,
        input_shape=input_shape,
        limit_train=args.limit_train,
        num_classes=contract.num_classes(base),
    )

    # the unprotected model, trained the same way from the same initial backbone weights
    source = same_init(onnx.load(args.model), base)
    unprotected = train(
        source,
        dataset.x_train,
        dataset.y_train,
        TrainConfig(epochs=args.epochs, seed=0),
        logits=logits_tensor(source),
        progress_desc="unprotected",
    ).model
    unprotected_acc = atk.accuracy(unprotected, unprotected.graph.output[0].name, dataset.x_test, dataset.y_test)
    print(f"unprotected LeNet-5: {unprotected_acc:.2f}% ({time.perf_counter() - began:.0f}s)", flush=True)

    schedule = atk.Schedule(epochs=args.attack_epochs, min_steps=args.min_steps, lr_grid=tuple(_floats(args.lr_grid)))
    scratch_cache: dict = {}
    default_cache: dict[int, float] = {}

    def scratch_default(seed: int) -> float:
        """Fine-tune-all from an untrained backbone with the compiler's default init, on the seed's budget."""
        if seed not in default_cache:
            untrained = normal_part(build_mirrornet(args.model, channels=args.channels, seed=5000 + seed)[0])
            split = atk.draw_budget(len(dataset.y_train), args.budget, seed)
            attack = atk.Attack("scratch_default", untrained, contract.BACKBONE_LOGITS, lambda n: True)
            default_cache[seed] = atk.fit_and_score(
                attack,
                dataset.x_train[split.labelled],
                dataset.y_train[split.labelled],
                dataset.x_test,
                dataset.y_test,
                schedule,
                seed,
                args.budget,
            ).accuracy
        return default_cache[seed]

    rows = []
    for setting_name in args.settings.split(","):
        setting = parse_setting(setting_name)
        for width in _ints(args.widths):
            name = f"W{width}-{setting_name}"
            t0 = time.perf_counter()
            build = out / name
            if args.reuse and (build / "mirrornet.onnx").is_file():
                trained = onnx.load(str(build / "mirrornet.onnx"))
            else:
                trained = train_mirrornet(add_stem(base, width), dataset, setting, args.epochs, seed=0)
            t1 = time.perf_counter()
            build.mkdir(exist_ok=True)
            (build / "mirrornet.onnx").write_bytes(trained.SerializeToString())
            (build / "normal.onnx").write_bytes(normal_part(trained).SerializeToString())
            report = atk.run(
                build,
                dataset,
                budgets=[args.budget],
                seeds=args.seeds,
                schedule=schedule,
                attacks=tuple(args.attacks.split(",")),
                scratch_cache=scratch_cache,
            )
            (out / f"{name}.attack.json").write_text(json.dumps(report, indent=1))
            table, head = atk.format_report(report)
            print(
                f"== {name} (train {t1 - t0:.0f}s, attacks {time.perf_counter() - t1:.0f}s)\n{table}\n{head}",
                flush=True,
            )
            cpm_macs, backbone_macs = mac_ratio(trained)
            acc = {}
            for r in report["results"]:
                acc.setdefault(r["attack"], {})[r["seed"]] = r["accuracy"]
            acc["scratch_default"] = {s: scratch_default(s) for s in range(args.seeds)}
            print(
                f"scratch_default (untrained backbone, compiler's default init): "
                f"{[round(v, 2) for v in acc['scratch_default'].values()]}",
                flush=True,
            )
            gains = {
                a: [acc[a][s] - acc["scratch"][s] for s in sorted(acc["scratch"])]
                for a in atk.LABELLED_ATTACKS
                if a in acc and "scratch" in acc
            }
            fair = [
                max(acc[a][s] for a in atk.LABELLED_ATTACKS if a in acc)
                - max(acc["scratch"][s], acc["scratch_default"][s])
                for s in range(args.seeds)
            ]
            rows.append(
                {
                    "width": width,
                    "setting": setting_name,
                    "unprotected": unprotected_acc,
                    "mirrornet": report["mirrornet_accuracy"],
                    "backbone": report["backbone_accuracy"],
                    "cpm_macs": cpm_macs,
                    "backbone_macs": backbone_macs,
                    "gains": gains,
                    "scratch": list(acc.get("scratch", {}).values()),
                    "scratch_default": list(acc["scratch_default"].values()),
                    "head_start_fair": fair,
                    "head_start": report["head_start"].get(str(args.budget)),
                }
            )
            (out / "summary.json").write_text(json.dumps(rows, indent=1))

    b = args.budget
    print(
        f"\nsecure stem, LeNet-5 / {args.data}, C = {args.channels}, {args.epochs} epochs on "
        f"{len(dataset.y_train)} images, {args.seeds} attack seed(s); test accuracy %; cost = unprotected - "
        f"MirrorNet; head start @{b} = attack - from scratch (points), mean ± sd over seeds"
    )
    print(
        f"{'W':>2} {'backbone training':<18}{'unprot':>7}{'MirrorNet':>10}{'cost':>6}{'bb alone':>9}"
        f"{'CPM MACs':>9}{'%bb':>7}{'scratch':>8}{'scr-def':>8}{'HS ft-all':>14}{'HS repl-CPM':>14}{'HS best':>14}"
        f"{'HS best*':>14}"
    )
    for r in rows:
        hs = r["head_start"]
        print(
            f"{r['width']:>2} {r['setting']:<18}{r['unprotected']:>7.2f}{r['mirrornet']:>10.2f}"
            f"{r['unprotected'] - r['mirrornet']:>6.2f}{r['backbone']:>9.2f}{r['cpm_macs']:>9d}"
            f"{100 * r['cpm_macs'] / r['backbone_macs']:>6.1f}%{np.mean(r['scratch']):>8.2f}"
            f"{np.mean(r['scratch_default']):>8.2f}"
            f"{atk.signed_spread(r['gains'].get('finetune_all', [])):>14}"
            f"{atk.signed_spread(r['gains'].get('replace_cpm', [])):>14}"
            f"{atk.signed_spread(hs['per_seed']) if hs else '-':>14}{atk.signed_spread(r['head_start_fair']):>14}"
        )
    print(
        "scratch: mirrorc.attack.thief's He-normal start; scr-def: the compiler's default-init start, untrained; "
        "HS ft-all/repl-CPM/best: against scratch (mirrorc.attack.thief); HS best*: against the better of the two"
    )
    print(f"(backbone MACs {rows[0]['backbone_macs'] if rows else 0}; total {time.perf_counter() - began:.0f}s)")
    write_results(
        "attack_stem",
        f"secure stem: cost = unprotected - MirrorNet, head start @{b} = attack - from "
        "scratch (points) per stem width W and backbone training",
        {
            "setup": {
                "data": args.data,
                "channels": args.channels,
                "epochs": args.epochs,
                "attack_seeds": args.seeds,
                "budget": b,
            },
            "rows": [{**r, "cost": r["unprotected"] - r["mirrornet"]} for r in rows],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
