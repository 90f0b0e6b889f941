"""``dmpq``: EdMIPS-style differentiable mixed-precision search, the SMPQ paper's foil.

1. The model runs in torch (:mod:`smpq_onnx.strategy.dmpq.torch_graph`) as a supernet
   (:mod:`smpq_onnx.strategy.dmpq.supernet`): every unit mixes its calibrated weight and activation
   quantizers with softmax(alpha) weights; model weights stay frozen (post-training).
2. Adam trains alpha on the calibration data: loss = task loss + cd * E[BOPs] / W8A8 BOPs
   (cross-entropy with labels, else KL divergence to the FP32 outputs).
3. The policy is the paper's DMPQ selection: per unit, the option of largest alpha
   (:func:`smpq_onnx.strategy.smpq.paper_selection`: argmax alpha_w and argmax alpha_a on split
   games; ties go to more bits).
4. Budgets are hard here, unlike in EdMIPS. If the argmax policy misses a budget, cd is
   multiplied by ``cd_growth`` and alpha is trained again from zero, at most ``retries``
   times. If every attempt misses, the documented fallback is the multiple-choice knapsack
   over every budget with utilities log P(option) of the last attempt (the log-softmax of
   alpha). ``SearchResult.details["selection"]`` says which happened (``argmax`` or
   ``knapsack``) and ``details["attempts"]`` how many trainings ran.
5. The chosen policy is scored by the shared ONNX Runtime evaluator, like every method.

torch is an optional dependency: this module imports it only when a search runs, and a
missing torch is a :class:`MissingDependencyError` with the install command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import onnx_ir as ir

from smpq_onnx.engine.dataset import Dataset, InputSpec
from smpq_onnx.engine.evaluator import Evaluator
from smpq_onnx.errors import MissingDependencyError
from smpq_onnx.hardware.budget import Budget
from smpq_onnx.hardware.cost import CostModel
from smpq_onnx.quant.policy import Policy
from smpq_onnx.strategy.game import QuantizationGame
from smpq_onnx.strategy.selection import Infeasible, solve
from smpq_onnx.strategy.smpq import (
    SearchResult,
    cheapest_policy,
    infeasible_error,
    knapsack_problem,
    paper_selection,
    policy_of,
)

TORCH_HINT = "dmpq needs torch: pip install 'smpq-onnx[torch]'"


@dataclass(frozen=True)
class DmpqSettings:
    """Training of alpha. The defaults train the bundled example (250 calibration images)
    for 80 Adam steps per attempt: 13-19 s on 2 CPU cores shared with other work."""

    lr: float = 0.05
    """Adam learning rate of alpha."""
    epochs: int = 10
    """Passes over the calibration data per training attempt."""
    cd: float = 0.01
    """Weight of the normalised expected-BOPs term (EdMIPS' complexity coefficient), first
    attempt. Small, so that doubling finds about the smallest cd whose argmax policy fits.
    Bundled example, 80 steps, seed 0: E[BOPs] / W8A8 BOPs after training (argmax policy's
    ratio) 0.49 (0.44) at cd 0, 0.46 (0.36) at 0.01, 0.32 (0.28) at 0.1, 0.19 (0.15) at 0.5,
    0.14 (0.12) at 2."""
    batch_size: int = 32
    """Samples per step (a model with a static batch size uses its own)."""
    seed: int = 0
    cd_growth: float = 2.0
    """Factor applied to cd after an attempt whose argmax policy misses the budget."""
    retries: int = 6
    """Extra attempts with a larger cd before the knapsack fallback."""
    threads: int = 1
    """torch intra-op threads while training (restored after). Measured on the bundled
    example, 2 shared cores under load: 0.25 s per step with 1 thread, 4.6 s with 2 (the
    OpenMP workers spin against the other processes)."""

    def __post_init__(self) -> None:
        for name in ("lr", "cd_growth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DmpqSettings.{name} must be > 0")
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"DmpqSettings.{name} must be >= 1")
        if self.cd < 0 or self.retries < 0:
            raise ValueError("DmpqSettings.cd and DmpqSettings.retries must be >= 0")


def require_torch() -> None:
    """Raise :class:`MissingDependencyError` (one line, exit 2) when torch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(TORCH_HINT) from e


def dmpq_search(game: QuantizationGame, evaluator: Evaluator, costs: CostModel, budget: Budget,
                *, calib_data: Dataset, settings: DmpqSettings | None = None) -> SearchResult:
    """Train alpha on ``calib_data``, select per the budget rule above, evaluate the policy."""
    settings = settings or DmpqSettings()
    require_torch()
    import torch

    from smpq_onnx.strategy.dmpq.supernet import BitMixture, TrainLog, train_alpha
    from smpq_onnx.strategy.dmpq.torch_graph import TorchGraph

    if not _fits(costs, budget, cheapest_policy(game)):
        raise infeasible_error(game, costs, budget)
    start = time.perf_counter()
    model = evaluator.calibration.model
    graph = TorchGraph(model)
    mixture = BitMixture(game, evaluator.calibration, costs)
    static = _static_batch(model.ir_model)
    batch_size = static or settings.batch_size
    cd = settings.cd
    logs: list[TrainLog] = []
    policy: Policy | None = None
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        for attempt in range(settings.retries + 1):
            if attempt:
                cd *= settings.cd_growth
            mixture.reset()
            logs.append(train_alpha(graph, mixture, calib_data, cd=cd, lr=settings.lr,
                                    epochs=settings.epochs, batch_size=batch_size,
                                    seed=settings.seed, drop_last=static is not None))
            candidate = paper_selection(game, mixture.player_alpha())
            if _fits(costs, budget, candidate):
                policy = candidate
                break
    finally:
        torch.set_num_threads(threads)
    selection = "argmax"
    phases = {"train_s": time.perf_counter() - start}
    start = time.perf_counter()
    if policy is None:
        selection = "knapsack"
        try:
            choice = solve(knapsack_problem(game, costs, budget, mixture.log_probabilities()))
        except Infeasible as e:
            raise infeasible_error(game, costs, budget) from e
        policy = policy_of(game, choice)
    score = evaluator.evaluate(policy).score
    phases["selection_s"] = time.perf_counter() - start
    details: dict[str, float | int | str] = {
        "selection": selection, "attempts": len(logs), "cd": logs[-1].cd,
        "steps_per_attempt": logs[-1].steps, "loss": logs[-1].loss_kind,
        "task_loss": logs[-1].task_loss, "expected_bops_ratio": logs[-1].complexity,
    }
    return SearchResult(policy, score, costs.cost(policy), evaluator.fp32_score, game, None,
                        None, mixture.player_alpha(), [(policy, score)], phases, details)


def _fits(costs: CostModel, budget: Budget, policy: Policy) -> bool:
    return budget.fits(costs.cost(policy))


def _static_batch(model: ir.Model) -> int | None:
    """The model inputs' static batch size, if they have one."""
    fixed = [spec.shape[0] for spec in InputSpec.of_model(model) if spec.shape]
    sizes = [b for b in fixed if b is not None]
    return sizes[0] if sizes else None
