"""dmpq: the torch interpreter, the bit-width mixture, training of alpha, and the search."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import make_model, run_ort
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")

from smpq_onnx.api.context import QuantizationContext, build_context  # noqa: E402
from smpq_onnx.cli.main import cli  # noqa: E402
from smpq_onnx.errors import BudgetInfeasibleError, UnsupportedModelError  # noqa: E402
from smpq_onnx.example import example_data_path, example_model_path  # noqa: E402
from smpq_onnx.hardware.budget import Budget  # noqa: E402
from smpq_onnx.model.importer import import_model  # noqa: E402
from smpq_onnx.quant.quantizers import fake_quant_activation  # noqa: E402
from smpq_onnx.strategy.dmpq.search import DmpqSettings, dmpq_search  # noqa: E402
from smpq_onnx.strategy.dmpq.supernet import (  # noqa: E402
    ActivationMixture,
    BitMixture,
    activation_quantizer,
    train_alpha,
)
from smpq_onnx.strategy.dmpq.torch_graph import TorchGraph  # noqa: E402
from smpq_onnx.strategy.game import QuantizationGame  # noqa: E402
from smpq_onnx.strategy.smpq import cheapest_policy, paper_selection, policy_of  # noqa: E402

FAST = DmpqSettings(epochs=3, batch_size=16)


def small_net(seed: int = 0) -> onnx.ModelProto:
    """x[N,3,12,12] -> Conv(3->8, s2, asymmetric pads) -> Clip(0, 6) -> depthwise Conv(8, 3x3)
    -> HardSwish -> ConvTranspose(8->4, s2) -> MaxPool -> AveragePool -> Concat(with a
    Transpose/Reshape branch) -> GlobalAveragePool -> Flatten -> Gemm(transB, alpha, beta)
    -> Sigmoid/Tanh/Mul -> Gemm -> Softmax."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.normal(size=shape) * scale).astype(np.float32)

    inits = {
        "w1": w(8, 3, 3, 3), "b1": w(8), "wd": w(8, 1, 3, 3), "bd": w(8),
        "wt": w(8, 4, 2, 2), "bt": w(4), "w_fc": w(6, 8), "b_fc": w(6), "w_out": w(6, 5),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
        "shape": np.array([0, 4, 12, 12], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], name="dw", group=8,
                         pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c2"], ["h2"], name="hswish"),
        helper.make_node("ConvTranspose", ["h2", "wt", "bt"], ["t"], name="up", strides=[2, 2]),
        helper.make_node("MaxPool", ["t"], ["mp"], name="maxpool", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[2, 2],
                         strides=[1, 1], pads=[0, 0, 1, 1]),
        helper.make_node("Transpose", ["t"], ["tt"], name="transpose", perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", ["tt", "shape"], ["rs"], name="reshape"),
        helper.make_node("Concat", ["ap", "rs"], ["cat"], name="concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["fc"], name="fc", transB=1,
                         alpha=0.5, beta=2.0),
        helper.make_node("Sigmoid", ["fc"], ["s"], name="sigmoid"),
        helper.make_node("Tanh", ["fc"], ["th"], name="tanh"),
        helper.make_node("Mul", ["s", "th"], ["m"], name="mul"),
        helper.make_node("MatMul", ["m", "w_out"], ["logits"], name="out"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    return make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dmpq")
    model = folder / "small.onnx"
    onnx.save(small_net(), str(model))
    rng = np.random.default_rng(0)
    data = folder / "data.npz"
    np.savez(data, x=rng.normal(size=(64, 3, 12, 12)).astype(np.float32))
    return model, data


@pytest.fixture(scope="module")
def tiny_context(tiny: tuple[Path, Path]) -> QuantizationContext:
    model, data = tiny
    return build_context(model, hw="flexible", data=data, metric="sqnr")


@pytest.fixture(scope="module")
def example_context(tmp_path_factory: pytest.TempPathFactory) -> QuantizationContext:
    """The bundled example on its first 320 images (240 evaluate, 80 calibrate)."""
    path = tmp_path_factory.mktemp("example") / "data.npz"
    with np.load(example_data_path()) as archive:
        np.savez(path, **{key: archive[key][:320] for key in archive.files})
    return build_context(example_model_path(), hw="flexible", data=path)


def _budget(context: QuantizationContext, ratio: float) -> Budget:
    return dataclasses.replace(Budget.from_profile(context.profile, context.model),
                               bops=int(ratio * context.model.total_macs * 64))


# --- interpreter -----------------------------------------------------------------------------


def test_interpreter_equals_ort_on_the_bundled_example() -> None:
    model = import_model(example_model_path())
    x = np.load(example_data_path())["x"][:64]
    proto = onnx.load(str(example_model_path()))
    expected = run_ort(proto, {"input": x})[0]
    got = TorchGraph(model)({"input": torch.from_numpy(x)})[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_interpreter_equals_ort_with_depthwise_conv_and_gemm() -> None:
    proto = small_net()
    x = np.random.default_rng(1).normal(size=(4, 3, 12, 12)).astype(np.float32)
    got = TorchGraph(import_model(proto))({"x": torch.from_numpy(x)})[0].numpy()
    np.testing.assert_allclose(got, run_ort(proto, {"x": x})[0], atol=1e-4, rtol=0)


def test_an_op_without_torch_implementation_is_named() -> None:
    proto = small_net()
    proto.graph.node[-1].op_type = "Hardmax"
    with pytest.raises(UnsupportedModelError, match="op Hardmax .*dmpq"):
        TorchGraph(import_model(proto))


def test_hooks_replace_weight_activation_and_bias() -> None:
    model = import_model(small_net())
    graph = TorchGraph(model)
    seen: list[tuple[str, str]] = []

    class Zero:
        def weight(self, layer: str, value: torch.Tensor) -> torch.Tensor:
            seen.append(("w", layer))
            return torch.zeros_like(value)

        def activation(self, layer: str, value: torch.Tensor) -> torch.Tensor:
            seen.append(("a", layer))
            return value

        def bias(self, layer: str, value: torch.Tensor) -> torch.Tensor:
            seen.append(("b", layer))
            return torch.zeros_like(value)

    x = torch.ones(2, 3, 12, 12)
    y = graph({"x": x}, Zero())[0]
    names = [layer.name for layer in model.layers]
    assert [s for s in seen if s[0] == "w"] == [("w", n) for n in names]
    assert ("b", "conv1") in seen and ("b", "out") not in seen  # MatMul has no bias
    torch.testing.assert_close(y, torch.full((2, 5), 0.2))  # zero logits -> uniform softmax


# --- mixture ---------------------------------------------------------------------------------


def test_activation_mixture_is_the_reference_with_a_straight_through_gradient(
        example_context: QuantizationContext) -> None:
    calibration = example_context.calibration
    tensor = example_context.model.layers[1].activation
    quantizers = [activation_quantizer(calibration, tensor, b) for b in (2, 4, 8)]
    x = torch.linspace(-1.0, 6.0, 501, requires_grad=True)
    p = torch.tensor([0.2, 0.3, 0.5], requires_grad=True)
    y = ActivationMixture.apply(x, p, *quantizers)
    reference = sum(float(p.detach()[i]) * fake_quant_activation(x.detach().numpy(),
                                                        calibration.activation(tensor, b))
                    for i, b in enumerate((2, 4, 8)))
    np.testing.assert_allclose(y.detach().numpy(), reference, atol=1e-6)
    g = torch.randn(501, generator=torch.Generator().manual_seed(0))
    (y * g).sum().backward()
    levels = [torch.from_numpy(fake_quant_activation(x.detach().numpy(),
                                                     calibration.activation(tensor, b)))
              for b in (2, 4, 8)]
    np.testing.assert_allclose(p.grad.numpy(), [float((g * q).sum()) for q in levels], rtol=1e-5)
    inside = [((x >= q.low) & (x <= q.high)).float() for q in quantizers]
    expected_x = g * sum(float(p.detach()[i]) * inside[i] for i in range(3))
    np.testing.assert_allclose(x.grad.numpy(), expected_x.detach().numpy(), atol=1e-6)


def _one_hot_outputs(context: QuantizationContext, choice: list[int]) -> np.ndarray:
    game = QuantizationGame(context.space)
    mixture = BitMixture(game, context.calibration, context.costs)
    mixture.set_policy(choice)
    feeds = {k: torch.from_numpy(v) for k, v in context.eval_data.inputs.items()}
    with torch.no_grad():
        return TorchGraph(context.model)(feeds, mixture.bind())[0].numpy()


def test_one_hot_mixture_equals_the_onnx_evaluator(tiny_context: QuantizationContext) -> None:
    game = QuantizationGame(tiny_context.space)
    rng = np.random.default_rng(0)
    for _ in range(4):
        choice = [int(rng.integers(len(unit.options))) for unit in game.units]
        expected = tiny_context.evaluator.outputs(policy_of(game, choice))
        np.testing.assert_allclose(_one_hot_outputs(tiny_context, choice), expected, atol=1e-4,
                                   rtol=0)


def test_one_hot_mixture_matches_the_evaluator_on_the_example(
        example_context: QuantizationContext) -> None:
    """ORT's and torch's convolutions sum in different orders, so an activation value can land
    on the other side of a rounding tie: measured, 2 rows of 750 differed at W8A8."""
    game = QuantizationGame(example_context.space)
    rng = np.random.default_rng(0)
    for _ in range(2):
        choice = [int(rng.integers(len(unit.options))) for unit in game.units]
        expected = example_context.evaluator.outputs(policy_of(game, choice))
        got = _one_hot_outputs(example_context, choice)
        close = np.abs(got - expected).max(axis=1) <= 1e-4
        assert close.mean() >= 0.98
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99


def test_alpha_gets_gradients_and_cd_lowers_expected_bops(
        tiny_context: QuantizationContext) -> None:
    game = QuantizationGame(tiny_context.space)
    graph = TorchGraph(tiny_context.model)
    mixture = BitMixture(game, tiny_context.calibration, tiny_context.costs)
    feeds = {k: torch.from_numpy(v[:16]) for k, v in tiny_context.calib_data.inputs.items()}
    (graph(feeds, mixture.bind())[0] ** 2).sum().backward()
    for name, alpha in mixture.alphas.items():
        assert alpha.grad is not None and float(alpha.grad.abs().sum()) > 0, name
    start = float(mixture.bind().complexity().detach())
    ratios = {}
    for cd in (0.0, 10.0):
        mixture.reset()
        log = train_alpha(graph, mixture, tiny_context.calib_data, cd=cd, lr=0.2, epochs=5,
                          batch_size=16, seed=0)
        assert log.loss_kind == "kl" and log.steps == 5
        ratios[cd] = log.complexity
    assert ratios[10.0] < start - 0.1
    assert ratios[10.0] < ratios[0.0] - 0.1


# --- search ----------------------------------------------------------------------------------


def test_same_seed_same_policy_and_alpha_aligned_with_players(
        tiny_context: QuantizationContext) -> None:
    game = QuantizationGame(tiny_context.space)
    budget = _budget(tiny_context, 0.5)
    runs = [dmpq_search(game, tiny_context.evaluator, tiny_context.costs, budget,
                        calib_data=tiny_context.calib_data, settings=FAST) for _ in range(2)]
    assert runs[0].policy == runs[1].policy
    assert runs[0].alpha is not None and runs[1].alpha is not None
    np.testing.assert_array_equal(runs[0].alpha, runs[1].alpha)
    assert runs[0].alpha.shape == (len(game.players),)
    if runs[0].details["selection"] == "argmax":
        assert paper_selection(game, runs[0].alpha) == runs[0].policy


def test_alpha_entries_follow_the_players(tiny_context: QuantizationContext) -> None:
    game = QuantizationGame(tiny_context.space)
    assert game.split_sides
    mixture = BitMixture(game, tiny_context.calibration, tiny_context.costs)
    with torch.no_grad():
        for value in mixture.alphas.values():
            value.copy_(torch.arange(len(value), dtype=torch.float32))
    alpha = mixture.player_alpha()
    for i, player in enumerate(game.players):
        table = mixture.tables[player.unit]
        if player.side == "w":
            assert alpha[i] == table.w_bits.index(player.w_bits)
        else:
            assert alpha[i] == table.a_bits.index(player.a_bits)


def test_joint_games_mix_the_allowed_pairs(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    model, data = tiny
    context = build_context(model, hw="mcu", data=data, metric="sqnr")
    game = QuantizationGame(context.space)
    assert not game.split_sides
    budget = _budget(context, 0.6)
    result = dmpq_search(game, context.evaluator, context.costs, budget,
                         calib_data=context.calib_data, settings=FAST)
    assert result.alpha is not None and result.alpha.shape == (len(game.players),)
    assert budget.fits(result.costs)


def test_the_budget_is_met_by_cd_growth_or_the_knapsack(
        tiny_context: QuantizationContext) -> None:
    game = QuantizationGame(tiny_context.space)
    tight = _budget(tiny_context, 0.15)
    result = dmpq_search(game, tiny_context.evaluator, tiny_context.costs, tight,
                         calib_data=tiny_context.calib_data, settings=FAST)
    assert tight.fits(result.costs)
    assert result.details["selection"] in ("argmax", "knapsack")
    # Only the cheapest policy fits and cd = 0 never reaches it: the knapsack fallback does.
    cheapest = cheapest_policy(game)
    only = dataclasses.replace(tight, bops=tiny_context.costs.cost(cheapest).bops)
    fallback = dmpq_search(game, tiny_context.evaluator, tiny_context.costs, only,
                           calib_data=tiny_context.calib_data,
                           settings=dataclasses.replace(FAST, cd=0.0, retries=1))
    assert fallback.details["selection"] == "knapsack" and fallback.details["attempts"] == 2
    assert fallback.policy == cheapest


def test_an_infeasible_budget_fails_before_training(tiny_context: QuantizationContext) -> None:
    game = QuantizationGame(tiny_context.space)
    with pytest.raises(BudgetInfeasibleError):
        dmpq_search(game, tiny_context.evaluator, tiny_context.costs, Budget(bops=1),
                    calib_data=tiny_context.calib_data, settings=FAST)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="epochs"):
        DmpqSettings(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        DmpqSettings(lr=0.0)


# --- command line ----------------------------------------------------------------------------


def test_search_method_dmpq_writes_its_outputs(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--metric", "sqnr", "--method", "dmpq",
        "--budget-bops-ratio", "0.4", "--seed", "3", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["method"] == "dmpq" and report["seed"] == 3
    assert all(line["fits"] for line in report["budget"])
    assert report["method_details"]["selection"] in ("argmax", "knapsack")
    assert (tmp_path / "model.qdq.onnx").is_file() and (tmp_path / "policy.json").is_file()


def test_dmpq_without_torch_is_one_line(tiny: tuple[Path, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = tiny
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    result = CliRunner().invoke(cli, [
        "search", str(model), "--data", str(data), "--metric", "sqnr", "--method", "dmpq",
        "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("smpq-onnx: error: dmpq needs torch: pip install "
                                     "'smpq-onnx[torch]'")


@pytest.mark.parametrize("ratio", [0.08, 0.07])
def test_an_attempt_depends_on_its_cd_alone(tiny_context: QuantizationContext,
                                            ratio: float) -> None:
    """Every attempt trains afresh from the seed, so starting the doubling at the cd where it
    stopped gives the same policy and alpha (the benchmark skips attempts on that premise)."""
    game = QuantizationGame(tiny_context.space)
    budget = _budget(tiny_context, ratio)
    doubling = dataclasses.replace(FAST, cd=1e-6, cd_growth=10.0)
    full = dmpq_search(game, tiny_context.evaluator, tiny_context.costs, budget,
                       calib_data=tiny_context.calib_data, settings=doubling)
    assert full.details["attempts"] >= 2  # some attempts to skip
    last = dmpq_search(game, tiny_context.evaluator, tiny_context.costs, budget,
                       calib_data=tiny_context.calib_data,
                       settings=dataclasses.replace(doubling, cd=float(full.details["cd"]),
                                                    retries=0))
    assert last.details["attempts"] == 1 and last.policy == full.policy
    assert full.alpha is not None and last.alpha is not None
    np.testing.assert_array_equal(last.alpha, full.alpha)
