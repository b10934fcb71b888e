"""Compiler core on small models: pass manager, canonicalize, taps, mirror, annotate, verify."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import test_core_fixtures as F
from helpers import ort_session, source_logits, zero_cpm_head
from mirrorc.errors import MirrorcError
from mirrorc.pipeline import analyze, build_mirrornet, compile_to_c, secure_pipeline
from passes import contract
from passes.annotate import get_props
from passes.base import Pass, PassContext, PassManager
from passes.lower_c import LowerCPass, MemPlanPass
from passes.mirror import select_indices
from passes.ops.shape import narrow_reshape_target as _narrow_reshape
from passes.split import SplitPass
from passes.verify import check_partition


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort_session(model, optimize=False)  # same arithmetic in both runs


# -- pass manager -------------------------------------------------------------------------------


class _Needs(Pass):
    name = "needs"
    requires = ("nothing-made-this",)


class _Fails(Pass):
    name = "fails"
    form = "proto"

    def run(self, ir, ctx):
        raise MirrorcError("node 'n1': bad")


def test_pass_manager_checks_requirements_and_names_the_pass():
    with pytest.raises(MirrorcError, match=r"^needs: needs nothing-made-this"):
        PassManager([_Needs()]).run(None, PassContext())
    with pytest.raises(MirrorcError, match=r"^fails: node 'n1': bad$"):
        PassManager([_Fails()]).run(None, PassContext())


def _mirrorc_imports(source: str) -> list[str]:
    """Modules of `mirrorc` that `source` imports, at any depth (function-local imports too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "mirrorc"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "mirrorc":
            found.append(node.module)
    return found


def test_passes_never_import_mirrorc():
    # the finder itself: a passes module that did would be caught
    assert _mirrorc_imports("import mirrorc\ndef f():\n    from mirrorc.errors import MirrorcError\n") == [
        "mirrorc",
        "mirrorc.errors",
    ]
    assert _mirrorc_imports("import mirrorc_tools\nfrom passes.base import Pass\n") == []
    files = sorted((Path(__file__).resolve().parent.parent / "passes").glob("*.py"))
    assert len(files) >= 14
    offenders = {f.name: _mirrorc_imports(f.read_text()) for f in files}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_pass_manager_refuses_a_secure_pass_without_its_requirement(example_models):
    mirrornet, _ = build_mirrornet(example_models["lenet5"], channels=2)
    ctx = PassContext()  # nothing says this graph was verified
    with pytest.raises(MirrorcError, match=r"^split: needs verified \(run the passes that ensure it first\)$"):
        PassManager([SplitPass()]).run(mirrornet, ctx)
    assert ctx.results == [] and "normal" not in ctx.info  # refused before it ran
    secure = secure_pipeline(mirrornet).secure
    with pytest.raises(MirrorcError, match=r"^memplan: needs bn_folded"):
        PassManager([MemPlanPass()]).run(secure, PassContext(facts={"verified", "split"}))
    with pytest.raises(MirrorcError, match=r"^lower_c: needs memory_planned"):
        PassManager([LowerCPass("lenet5")]).run(secure, PassContext(facts={"verified", "split", "bn_folded"}))


def test_pass_results_of_a_full_lenet5_run(example_models):
    path = example_models["lenet5"]
    mirrornet, built = compile_to_c(path, "lenet5")
    res = {r.name: r for r in built.results}
    assert [r.name for r in built.results] == [
        "load",
        "canonicalize",
        "taps",
        "mirror",
        "annotate",
        "verify",
        "split",
        "fold_bn",
        "memplan",
        "lower_c",
    ]
    modified = {name for name, r in res.items() if r.modified}
    # LeNet-5 has no BatchNorm, so fold_bn changes nothing; memplan and lower_c read the graph only
    assert modified == {"load", "canonicalize", "mirror", "annotate", "split"}
    source = onnx.load(path)
    assert len(res["load"].nodes_added) == len(source.graph.node)
    assert set(res["load"].initializers_added) == {t.name for t in source.graph.initializer}
    assert res["mirror"].nodes_added and all(
        n.startswith(("cpm/", "mirrorc/select")) for n in res["mirror"].nodes_added
    )
    assert {t for t in res["mirror"].initializers_added if not t.startswith("mirrorc/select")} == {
        t.name for t in mirrornet.graph.initializer if t.name.startswith("cpm/")
    }
    assert res["annotate"].summary == "metadata changed"
    normal_nodes = {n.name for n in built.normal.graph.node}
    assert set(res["split"].nodes_removed) == normal_nodes and not res["split"].nodes_added
    assert {n.name for n in built.secure.graph.node} == {n.name for n in mirrornet.graph.node} - normal_nodes
    assert res["fold_bn"].summary == "graph unchanged; 0 BatchNormalization folded, 0 left"
    plan = built.plan.memory
    assert res["memplan"].summary == (
        f"graph unchanged; {built.plan.n_taps + 1} commands, "
        f"arena {4 * plan.arena_floats} B, state {4 * plan.carry_floats} B"
    )
    assert res["lower_c"].summary.endswith(f"{sum(built.lowered.sizes.values())} B in the TA")
    for r in built.results:
        assert r.seconds >= 0 and "\n" not in r.summary
        assert r.modified == (r.summary.split(";")[0] != "graph unchanged")


def test_pass_result_sees_bn_folding(example_models):
    built = secure_pipeline(build_mirrornet(example_models["vgg7"], channels=2)[0])
    fold = built.results[1]
    folded = fold.nodes_removed  # the BatchNormalization nodes
    assert fold.name == "fold_bn" and fold.modified and folded
    assert all(n.startswith("cpm/") for n in folded)
    assert not any(n.op_type == "BatchNormalization" for n in built.secure.graph.node)
    assert len(fold.initializers_added) == 2 * len(folded)  # a folded weight and bias per Conv
    assert [r.name for r in built.results] == ["split", "fold_bn", "memplan"]  # no TA name: no lowering


# -- canonicalize and taps ----------------------------------------------------------------------


def test_lenet_taps_follow_the_paper(example_models):
    graph, info = analyze(example_models["lenet5"])
    producers = [graph.tensors()[t].inputs[0].op for t in info["tap_tensors"]]
    print("lenet5 taps:", info["tap_tensors"], producers)
    # after pool1, pool2, fc1+relu, fc2+relu; not after Flatten, not on the logits
    assert producers == ["MaxPool", "MaxPool", "Relu", "Relu"]
    assert info["num_stages"] == 5 and info["num_classes"] == 10
    assert info["input"]["shape"] == ["N", 1, 28, 28]


def test_vgg7_has_a_tap_per_conv_block(example_models):
    graph, info = analyze(example_models["vgg7"])
    producers = [graph.tensors()[t].inputs[0].op for t in info["tap_tensors"]]
    assert producers == ["Relu", "MaxPool", "Relu", "MaxPool", "Relu", "MaxPool"]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("tiny_resnet", ["MaxPool", "Relu", "GlobalAveragePool"]),  # stem, identity block, last block (pooled)
        ("tiny_inception", ["Relu", "LRN", "GlobalAveragePool"]),  # the module's Concat+LRN is one tap
        ("tiny_densenet", ["Relu", "AveragePool", "GlobalAveragePool"]),  # none in the dense block: per transition
        ("tiny_shufflenet", ["MaxPool", "Relu", "Relu", "GlobalAveragePool"]),
        ("tiny_squeezenet", ["MaxPool", "Concat", "Concat"]),  # one per Fire module, not after its squeeze
    ],
)
def test_taps_of_block_structures(tmp_path, name, expected):
    graph, info = analyze(F.write(tmp_path, name))
    producers = [graph.tensors()[t].inputs[0].op for t in info["tap_tensors"]]
    assert producers == expected
    # every tap is a dominator: without it the logits cannot be reached from the input
    for t in info["tap_tensors"]:
        assert not _reaches(graph, graph.inputs[0], graph.outputs[0], blocked=t)
    assert _reaches(graph, graph.inputs[0], graph.outputs[0], blocked=None)


def _reaches(graph, src, dst, blocked) -> bool:
    seen, stack = set(), [src]
    while stack:
        t = stack.pop()
        if t is dst:
            return True
        if t.name == blocked or t.name in seen:
            continue
        seen.add(t.name)
        stack.extend(o for node in t.outputs for o in node.outputs)
    return False


@pytest.mark.parametrize("opset", [7, 9])
def test_canonicalize_old_opset_same_outputs(tmp_path, opset):
    path = str(tmp_path / f"old_opset{opset}.onnx")
    onnx.save(F.old_opset(opset), path)
    model, info = build_mirrornet(path, init="keep")
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Dropout", "Identity", "Sum", "Softmax"}
    assert info["input"]["shape"][0] == "N"  # the fixed batch became symbolic
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    src = source_logits(path, info["logits_in_source"], x)
    bb = _session(model).run([contract.BACKBONE_LOGITS], {"x": x})[0]
    diff = float(np.abs(src - bb).max())
    print(f"old_opset (opset {opset}) canonical vs source: max abs diff {diff:.3g}")
    assert diff <= 1e-5 * max(1.0, float(np.abs(src).max()))
    x4 = np.repeat(x, 4, axis=0)  # the symbolic batch really works
    label, bb4, _ = _session(model).run(None, {"x": x4})
    assert label.shape == (4,) and np.allclose(bb4, bb, atol=1e-6)


# -- mirror ---------------------------------------------------------------------------------------


def test_reshape_narrowing():
    # flatten [N,16,5,5] -> [N,400] with 2 channels -> [N,50]
    assert _narrow_reshape(["N", 16, 5, 5], ["N", 400], ["N", 2, 5, 5], np.array([0, 400])).tolist() == [0, 50]
    # channel shuffle split [N,12,8,8] -> [N,3,4,8,8] with 2 channels: groups must divide 2
    out = _narrow_reshape(["N", 12, 8, 8], ["N", 3, 4, 8, 8], ["N", 2, 8, 8], np.array([0, 3, 4, 8, 8]))
    assert out.tolist() == [0, 1, 2, 8, 8]
    # and the merge back
    out = _narrow_reshape(["N", 4, 3, 8, 8], ["N", 12, 8, 8], ["N", 2, 1, 8, 8], np.array([0, 12, 8, 8]))
    assert out.tolist() == [0, 2, 8, 8]


def test_select_indices():
    rng = np.random.default_rng(0)
    assert select_indices(16, 4, "first", rng) == [0, 1, 2, 3]
    assert select_indices(16, 4, "spread", rng) == [0, 4, 8, 12]
    r = select_indices(16, 4, "random", rng)
    assert len(set(r)) == 4 and r == sorted(r) and max(r) < 16


@pytest.mark.parametrize("name", ["lenet5", "vgg7", *F.FIXTURES])
def test_zeroed_cpm_gives_the_original_logits_exactly(tmp_path, example_models, name):
    path = example_models[name] if name in example_models else F.write(tmp_path, name)
    model, info = build_mirrornet(path, init="keep", channels=2)
    zero_cpm_head(model, info["cpm_head"])
    shape = [3 if isinstance(d, str) else d for d in info["input"]["shape"]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    label, bb, total = _session(model).run(None, {info["input"]["name"]: x})
    if name != "old_opset":  # old_opset's source is opset 9 and its batch is fixed at 1
        src = source_logits(path, info["logits_in_source"], x)
        print(f"{name}: backbone vs original max abs diff {np.abs(bb - src).max():.3g}")
        assert np.array_equal(bb, src)
    print(f"{name}: mirrornet vs backbone max abs diff {np.abs(total - bb).max():.3g}")
    assert np.array_equal(total, bb)
    assert np.array_equal(label, np.argmax(total, axis=1))


@pytest.mark.parametrize("name", ["lenet5", *F.FIXTURES])
def test_mirrornet_contract(tmp_path, example_models, name):
    path = example_models[name] if name in example_models else F.write(tmp_path, name)
    model, info = build_mirrornet(path, channels=2, select="spread", seed=3)
    g = model.graph
    assert [o.name for o in g.output] == [contract.LABEL, contract.BACKBONE_LOGITS, contract.MIRRORNET_LOGITS]
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    meta = get_props(model)
    assert meta[contract.META_VERSION] == "1" and meta[contract.META_CHANNELS] == "2"
    assert int(meta[contract.META_NUM_CLASSES]) == info["num_classes"]
    assert json.loads(meta[contract.META_OPTIONS])["select"] == "spread"
    assert len(json.loads(meta[contract.META_SOURCE])["sha256"]) == 64
    taps = json.loads(meta[contract.META_TAPS])
    assert [t["index"] for t in taps] == list(range(1, len(taps) + 1))
    nodes = {n.name: n for n in g.node}
    vis = {v.name: v for v in g.value_info}
    for t in taps:
        sel = nodes[f"mirrorc/select{t['index']}"]
        assert sel.op_type == "Gather" and sel.input[0] == t["tensor"] and sel.output[0] == t["selected"]
        assert get_props(sel)[contract.META_WORLD] == "normal"
        dims = [d.dim_value for d in vis[t["selected"]].type.tensor_type.shape.dim[1:]]
        assert dims == t["shape"] and t["bytes"] == 4 * int(np.prod(dims)) and len(t["channels"]) == dims[0]
        if t["index"] >= 2:
            assert nodes[f"cpm/add_m{t['index']}"].output[0] == f"cpm/m{t['index']}"
    inits = {i.name for i in g.initializer}
    for n in g.node:
        props = get_props(n)
        assert props[contract.META_WORLD] in ("normal", "secure") and int(props[contract.META_STAGE]) >= 1
        if props[contract.META_WORLD] == "secure":
            assert n.name.startswith("cpm/")
            assert all(
                x.startswith("cpm/")
                or x.startswith(contract.TAP_PREFIX)
                or x == contract.BACKBONE_LOGITS
                or x not in inits
                for x in n.input
                if x
            )
    assert nodes["cpm/final_add"].output[0] == contract.MIRRORNET_LOGITS
    assert nodes["cpm/argmax"].output[0] == contract.LABEL
    check_partition(model)
    onnx.checker.check_model(model, full_check=True)  # the real thing, not verify's skeleton
    # runs with batch 2 (or the fixed batch a model insists on)
    shape = [2 if isinstance(d, str) else d for d in info["input"]["shape"]]
    label, bb, total = _session(model).run(None, {info["input"]["name"]: np.ones(shape, np.float32)})
    assert label.shape == (shape[0],) and bb.shape == total.shape == (shape[0], info["num_classes"])


def test_lenet_dense_width_and_options(example_models):
    path = example_models["lenet5"]
    _, info = build_mirrornet(path, channels=2)
    assert info["dense_width"] == 50  # C x FO^2 = 2 x 5 x 5 (paper Eq. 1)
    assert [t["shape"] for t in info["taps"]] == [[2, 14, 14], [2, 5, 5], [50], [50]]
    _, info = build_mirrornet(path, channels=8, dense_width=30)
    # C=8 is more than conv1's 6 channels: tap 1 carries all 6; dense layers use the override
    assert [t["shape"] for t in info["taps"]] == [[6, 14, 14], [8, 5, 5], [30], [30]]
    _, info = build_mirrornet(path, channels=1, dense_width=4)
    assert [t["shape"] for t in info["taps"]][2:] == [[10], [10]]  # never fewer than the 10 classes
    with pytest.raises(MirrorcError, match="select"):
        build_mirrornet(path, select="best")
    with pytest.raises(MirrorcError, match="channels"):
        build_mirrornet(path, channels=0)


def test_init_modes_are_seeded(example_models):
    path = example_models["vgg7"]
    src = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    a, _ = build_mirrornet(path, seed=5)
    b, _ = build_mirrornet(path, seed=5)
    c, _ = build_mirrornet(path, seed=6)
    keep, _ = build_mirrornet(path, init="keep", seed=5)

    def weights(m):
        return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}

    wa, wb, wc, wk = weights(a), weights(b), weights(c), weights(keep)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not np.array_equal(wa["conv1.weight"], wc["conv1.weight"])
    assert not np.array_equal(wa["conv1.weight"], src["conv1.weight"])  # random: trained from scratch
    assert np.array_equal(wk["conv1.weight"], src["conv1.weight"])  # keep: the given backbone
    assert np.array_equal(wk["cpm/conv4/weight"], wa["cpm/conv4/weight"])  # the CPM is random either way


def test_unnarrowable_op_is_named(tmp_path):
    with pytest.raises(MirrorcError, match=r"^mirror: node 'lpnormalization\d+': LpNormalization"):
        build_mirrornet(F.write(tmp_path, "unnarrowable"))


# -- verify ---------------------------------------------------------------------------------------


def test_verify_rejects_secure_to_normal_edges(example_models):
    model, _ = build_mirrornet(example_models["lenet5"])
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    victim = next(
        n
        for n in bad.graph.node
        if get_props(n)[contract.META_WORLD] == "normal"
        and n.op_type == "Relu"
        and not n.name.startswith("mirrorc/")
        and n.input[0] != "input"
        and "fc" in n.input[0]
    )
    victim.input[0] = "cpm/m3"  # wrong shape is irrelevant: the partition check comes first
    with pytest.raises(MirrorcError, match=r"verify: node '.*': secure tensor 'cpm/m3' feeds normal node"):
        check_partition(bad)
    bad.CopyFrom(model)
    bad.graph.output.append(helper.make_tensor_value_info("cpm/m2", onnx.TensorProto.FLOAT, None))
    with pytest.raises(MirrorcError, match="graph outputs"):
        check_partition(bad)


def test_mlp_with_2d_taps(tmp_path):
    b = F.Builder(0)
    x = b.op("Relu", b.gemm("x", 20, 16))
    x = b.op("Relu", b.gemm(x, 16, 12))
    path = tmp_path / "mlp.onnx"
    onnx.save(b.model([20], b.gemm(x, 12, 3), 3), str(path))
    model, info = build_mirrornet(str(path), channels=2)
    assert [t["shape"] for t in info["taps"]] == [[3], [3]]  # at least K = 3 features
    label, bb, total = _session(model).run(None, {"x": np.ones((2, 20), np.float32)})
    assert total.shape == (2, 3)


def test_unknown_spatial_dim_is_named(tmp_path):
    m = F.tiny_resnet()
    dim = m.graph.input[0].type.tensor_type.shape.dim[2]
    dim.ClearField("dim_value")
    dim.dim_param = "H"
    path = tmp_path / "symbolic_h.onnx"
    onnx.save(m, str(path))
    with pytest.raises(MirrorcError, match=r"^canonicalize: tensor '\w+' has unknown shape"):
        build_mirrornet(str(path))


def test_random_init_resets_split_out_layer_affines(tmp_path):
    # tiny_inception's head is MatMul + Add(bias): with init=random the bias is a fresh zero
    path = F.write(tmp_path, "tiny_inception")
    src = onnx.load(path)
    add = next(n for n in src.graph.node if n.op_type == "Add")
    bias_name = add.input[1]
    src_inits = {t.name: t for t in src.graph.initializer}
    src_inits[bias_name].CopyFrom(numpy_helper.from_array(np.full(7, 3.0, np.float32), bias_name))
    onnx.save(src, path)
    rand, _ = build_mirrornet(path, init="random")
    keep, _ = build_mirrornet(path, init="keep")
    get = lambda m, n: numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == n))  # noqa: E731
    assert np.all(get(rand, bias_name) == 0) and np.all(get(keep, bias_name) == 3)
    cpm_bias = next(n for n in keep.graph.node if n.name == f"cpm/{add.name}").input[1]
    assert np.all(get(keep, cpm_bias) == 0)  # the CPM's copy is fresh, not the backbone's values


def test_external_data(tmp_path, example_models):
    m = onnx.load(example_models["vgg7"])
    path = tmp_path / "vgg7.onnx"
    onnx.save(m, str(path), save_as_external_data=True, location="vgg7.data", size_threshold=1024)
    model, info = build_mirrornet(str(path), init="keep")
    assert len(info["taps"]) == 6
    (tmp_path / "vgg7.data").unlink()
    with pytest.raises(MirrorcError, match=r"^load: file '.*vgg7.onnx': external data missing"):
        build_mirrornet(str(path))


def test_single_stage_model_has_nothing_to_mirror(tmp_path):
    b = F.Builder(0)
    path = tmp_path / "logreg.onnx"
    onnx.save(b.model([20], b.gemm("x", 20, 3), 3), str(path))
    with pytest.raises(MirrorcError, match=r"^taps: node '.*': found no tap"):
        build_mirrornet(str(path))


@pytest.mark.parametrize("channels", [2, 4])
def test_ghost_module_concat_is_split_to_the_shortcut_width(tmp_path, channels):
    # Add(shortcut, Concat(conv1x1, depthwise(conv1x1))): the CPM's 1x1 gets half the shortcut's
    # channels so that its depthwise copy follows and the Concat brings exactly the shortcut's
    model, _ = build_mirrornet(F.write(tmp_path, "tiny_ghostnet"), channels=channels)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    nodes = {n.output[0]: n for n in model.graph.node}
    adds = [n for n in model.graph.node if n.name.startswith("cpm/add") and not n.name.startswith("cpm/add_m")]
    assert len(adds) == 2
    for add in adds:
        concat = next(nodes[x] for x in add.input if x in nodes and nodes[x].op_type == "Concat")
        widths = [shapes[x][1] for x in concat.input]
        print(f"{add.name}: Concat parts {widths}, shortcut {[shapes[x][1] for x in add.input]}")
        assert widths == [channels // 2, channels // 2]
        assert [shapes[x][1] for x in add.input] == [channels, channels]


@pytest.mark.parametrize("name", ["tiny_shufflenet", "tiny_senet", "tiny_inception"])
def test_binary_ops_never_broadcast_channels_the_backbone_does_not(tmp_path, name):
    # at C=1 a 1-channel branch would silently broadcast against a 2-channel shortcut
    model, _ = build_mirrornet(F.write(tmp_path, name), channels=1)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name.startswith("cpm/") and node.op_type in ("Add", "Mul", "Sub", "Div"):
            ins = [x for x in node.input if x not in inits and x in shapes]
            if len(ins) == 2:
                assert shapes[ins[0]][1] == shapes[ins[1]][1], (node.name, shapes[ins[0]], shapes[ins[1]])
