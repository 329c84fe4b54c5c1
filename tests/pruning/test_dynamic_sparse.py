"""Dynamic sparse training: ``pruning.method=set`` (Mocanu et al. 2018) and ``rigl`` (Evci
et al. 2020) keep each layer's count exact while they drop its smallest alive weights and
regrow as many, at random (SET) or where the dense gradient is largest (RigL)."""

import math

import jax
import numpy as np
import pytest

from lottery import experiment
from lottery.config import ConfigError
from lottery.experiment.trainers import training_inputs
from lottery.pruning import TrainingInputs, count_alive, flatten, full_mask, unflatten
from lottery.pruning.dynamic_sparse import DynamicSparse
from lottery.pruning.erk import erk_keeps
from lottery.pruning.methods.set import set_update
from lottery.pruning.strategies import STRATEGIES, mask_updates
from lottery.train import UpdateMask, host_tree
from lottery.train.checkpoint import Checkpointer
from lottery.train.hooks import Checkpoint

from conftest import DIGITS, make_config

SET = [
    "pruning.method=set",
    "pruning.levels=1",
    "pruning.final_sparsity=0.8",
    "pruning.end_step=150it",
    "pruning.frequency=50it",
]


def recorded_run(tmp_path, extra=(), until=None, hooks=(), gradients=None):
    """Level 1's training from the start, every update's (step, weights, mask before, mask
    after) recorded (and the dense gradient it was given, into ``gradients``), and the
    weights and moments right after each update (``check.states``)."""
    plan = experiment.prepare(make_config([*DIGITS, *SET, *extra], tmp_path))
    steps, update = mask_updates(
        plan.strategy, plan.strategy_settings, plan.prunable, 0, plan.total_steps
    )
    seen = []

    def recording(run, trainer):
        inputs = training_inputs(run, trainer)
        if gradients is not None:
            gradients.append(flatten(inputs.gradients()))
        mask = update(inputs)
        seen.append((run.step, flatten(inputs.params), flatten(inputs.mask), flatten(mask)))
        return mask

    trainer = experiment.Experiment(plan).trainer
    run = trainer.start(0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params))
    check = CheckAfterUpdates(steps)
    trainer.train(run, until or plan.total_steps, [UpdateMask(steps, recording), check, *hooks])
    return plan, trainer, run, seen, check


class CheckAfterUpdates:
    """A hook right after each mask update: the weights and Adam moments it leaves."""

    def __init__(self, at):
        self.at, self.states = list(at), []

    def steps(self, start, end):
        return self.at

    def __call__(self, run, trainer):
        self.states.append((run.step, host_tree(run.state.params), host_tree(run.state.opt_state)))


def adam_moments(opt_state):
    """The (mu, nu) trees of the chained Adam state."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "mu"))
        if hasattr(s, "mu")
    ]
    (adam,) = found
    return flatten(adam.mu), flatten(adam.nu)


def test_set_counts_drops_regrowth_and_moments_at_every_update(tmp_path):
    plan, _, run, seen, check = recorded_run(tmp_path)
    assert [step for step, *_ in seen] == [0, 50, 100]
    initial = seen[0][3]
    for path in plan.prunable:  # uniform: each layer 20% of its weights
        size = initial[path].size
        assert initial[path].sum() == size - round(0.8 * size)
    for (step, params, before, after), (_, state_params, opt_state) in zip(
        seen[1:], check.states[1:], strict=True
    ):
        fraction = 0.3 * (1 + math.cos(math.pi * step / 150)) / 2
        mu, nu = adam_moments(opt_state)
        state_params = flatten(state_params)
        for path in plan.prunable:
            assert after[path].sum() == initial[path].sum(), (step, path)  # exact count
            dropped, regrown = before[path] & ~after[path], after[path] & ~before[path]
            count = round(fraction * before[path].sum())
            assert dropped.sum() == regrown.sum() == count > 0
            # the dropped are the alive weights of smallest magnitude (by hand: a threshold)
            alive_magnitudes = np.abs(params[path][before[path]])
            threshold = np.sort(alive_magnitudes)[count - 1]
            assert np.all(np.abs(params[path][dropped]) <= threshold)
            assert np.all(np.abs(params[path][after[path] & before[path]]) >= threshold)
            # regrown (pruned before, alive after) start at exactly 0.0, with zero moments
            assert np.all(state_params[path][regrown] == 0.0)
            assert np.all(mu[path][regrown] == 0.0) and np.all(nu[path][regrown] == 0.0)
            assert np.all(state_params[path][~after[path]] == 0.0)
    final = flatten(host_tree(run.state.params))
    for path in plan.prunable:  # invariant 1 at the end
        assert np.all(final[path][~seen[-1][3][path]] == 0.0)


def test_a_dropped_weight_keeps_its_adam_moments(tmp_path):
    """Why the hook zeroes a regrown weight's moments: when dropped they are kept (then only
    decay, the train step masking its gradient), so they are not 0 when it comes back."""
    _, _, _, seen, check = recorded_run(tmp_path)
    _, _, opt_50 = check.states[1]
    mu_50, _ = adam_moments(opt_50)
    dropped_50 = {p: seen[1][2][p] & ~seen[1][3][p] for p in seen[1][2]}
    # moments of the weights dropped at 50 are not zeroed there (they were alive)
    assert any(np.any(mu_50[p][dropped_50[p]] != 0.0) for p in dropped_50 if dropped_50[p].any())


def test_a_pruned_weight_is_zero_after_every_step(tmp_path):
    class EveryStep:
        def __init__(self):
            self.violations = 0

        def steps(self, start, end):
            return range(start, end + 1)

        def __call__(self, run, trainer):
            params, mask = flatten(host_tree(run.state.params)), flatten(host_tree(run.mask))
            self.violations += sum(int(np.any(params[p][~mask[p]] != 0.0)) for p in mask)

    every = EveryStep()
    recorded_run(tmp_path, hooks=[every])
    assert every.violations == 0


def test_the_update_is_a_pure_function_of_weights_mask_and_step():
    rng = np.random.default_rng(0)
    params = {"fc": {"kernel": rng.normal(size=(30, 20)).astype(np.float32)}}
    mask = {"fc": {"kernel": rng.random((30, 20)) < 0.3}}
    s = DynamicSparse(0.7, "uniform", 0.3, 10, 100)
    first = set_update(10, params, mask, ["fc/kernel"], s)
    again = set_update(10, params, mask, ["fc/kernel"], s)
    later = set_update(20, params, mask, ["fc/kernel"], s)
    assert np.array_equal(first["fc"]["kernel"], again["fc"]["kernel"])
    assert not np.array_equal(first["fc"]["kernel"], later["fc"]["kernel"])


def test_dropping_by_hand_on_a_small_layer():
    kernel = np.array([[0.5, -0.1, 0.0], [2.0, 0.05, -3.0]], np.float32)
    mask = np.array([[True, True, False], [True, True, False]])
    s = DynamicSparse(0.5, "uniform", 0.5, 1, 10)  # at step 0 the fraction is 0.5: drop 2
    new = set_update(0, {"l": {"kernel": kernel}}, {"l": {"kernel": mask}}, ["l/kernel"], s)
    new = new["l"]["kernel"]
    assert new[0, 0] and new[1, 0]  # 0.5 and 2.0 stay
    assert not new[0, 1] and not new[1, 1]  # -0.1 and 0.05 go
    assert new[0, 2] and new[1, 2]  # the two pruned positions come back


@pytest.mark.slow
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_a_resumed_run_updates_exactly_as_the_uninterrupted_one(tmp_path, method):
    """A checkpoint at an update step (saved after the update) resumes without updating
    again, and later updates (at 125) draw the same: the final weights and masks are bit
    for bit equal."""
    checkpointer = Checkpointer(tmp_path / "ckpt", 2)
    saver = Checkpoint(checkpointer, every_steps=100)  # at step 100, right after its update
    extra = [f"pruning.method={method}", "pruning.frequency=25it"]
    plan, _, whole, *_ = recorded_run(tmp_path / "whole", extra, hooks=[saver])
    trainer2 = experiment.Experiment(plan).trainer
    steps, update = mask_updates(
        plan.strategy, plan.strategy_settings, plan.prunable, 0, plan.total_steps
    )
    template = trainer2.start(
        0, plan.init_params, plan.init_batch_stats, full_mask(plan.init_params)
    )
    resumed = checkpointer.restore_latest(template)
    assert resumed.step == 100
    hook = UpdateMask(steps, lambda run, trainer: update(training_inputs(run, trainer)))
    trainer2.train(resumed, plan.total_steps, [hook])
    for path in plan.prunable:
        assert np.array_equal(
            flatten(host_tree(resumed.mask))[path], flatten(host_tree(whole.mask))[path]
        )
    for got, want in zip(
        jax.tree.leaves(host_tree(resumed.state.params)),
        jax.tree.leaves(host_tree(whole.state.params)),
        strict=True,
    ):
        assert np.array_equal(got, want)
    assert count_alive(host_tree(resumed.mask), plan.prunable) == count_alive(
        host_tree(whole.mask), plan.prunable
    )


def test_erk_gives_each_layer_its_share(tmp_path):
    plan, _, _, seen, _ = recorded_run(tmp_path, ["pruning.distribution=erk"])
    shapes = {p: seen[0][3][p].shape for p in plan.prunable}
    total = sum(math.prod(sh) - round(0.8 * math.prod(sh)) for sh in shapes.values())
    keeps = erk_keeps(shapes, total)
    for _, _, _, after in seen:
        assert {p: int(after[p].sum()) for p in plan.prunable} == keeps


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_a_dynamic_sparse_run_end_to_end(tmp_path, method):
    cfg = make_config([*DIGITS, *SET, f"pruning.method={method}"], tmp_path)
    store, rows = experiment.run(cfg)
    assert [r["level"] for r in rows] == [0, 1]
    mask = store.replicate(0).mask(1)
    plan = experiment.prepare(cfg)
    alive = flatten(mask)
    for path in plan.prunable:
        assert alive[path].sum() == alive[path].size - round(0.8 * alive[path].size)
    params, _ = store.replicate(0).params(1)
    params = flatten(params)
    assert all(np.all(params[p][~alive[p]] == 0.0) for p in plan.prunable)


@pytest.mark.parametrize(
    "override, words",
    [
        ("pruning.levels=3", "pruning.levels=3"),
        ("pruning.end_step=500it", "pruning.end_step"),
        ("pruning.final_sparsity=1.0", "pruning.final_sparsity=1.0"),
        ("pruning.drop_fraction=1.5", "pruning.drop_fraction=1.5"),
        ("pruning.distribution=lognormal", "pruning.distribution"),
    ],
)
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_bad_dynamic_sparse_settings_are_one_line(tmp_path, override, words, method):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        cfg = make_config([*DIGITS, *SET, f"pruning.method={method}", override], tmp_path)
        experiment.prepare(cfg)


# -- RigL ----------------------------------------------------------------------------------


def rigl_by_hand(weights, before, gradient, count):
    """RigL's rule written out with Python's sorted, for one flat layer: drop the ``count``
    alive of smallest (|w|, index), grow the ``count`` of largest (|g|, -index) among the
    positions not alive after the drop."""
    alive = [i for i in range(len(weights)) if before[i]]
    dropped = sorted(alive, key=lambda i: (abs(weights[i]), i))[:count]
    kept = set(alive) - set(dropped)
    candidates = [i for i in range(len(weights)) if i not in kept]
    grown = sorted(candidates, key=lambda i: (-abs(gradient[i]), i))[:count]
    return kept | set(grown)


def rigl_update(step, params, mask, gradient, s):
    (strategy_update,) = [STRATEGIES["rigl"].training_updates(s, ["l/kernel"], -1, s.end)[1]]
    inputs = TrainingInputs(step, params, mask, lambda: gradient)
    return strategy_update(inputs)["l"]["kernel"]


def test_rigl_by_hand_on_a_small_layer():
    """drop_fraction 0.5 at step 0 of 4 alive: drop 2 (|w| 0.05 and 0.1), grow the 2 of
    largest |g| not alive after the drop: -3.0's position and the dropped 0.05's."""
    kernel = np.array([[0.5, -0.1, 0.0], [2.0, 0.05, 0.0]], np.float32)
    mask = np.array([[True, True, False], [True, True, False]])
    grads = np.array([[9.0, 0.2, 1.0], [0.0, 4.0, -3.0]], np.float32)
    s = DynamicSparse(0.5, "uniform", 0.5, 1, 10)
    new = rigl_update(0, {"l": {"kernel": kernel}}, {"l": {"kernel": mask}},
                      {"l": {"kernel": grads}}, s)
    assert new.tolist() == [[True, False, False], [True, True, True]]
    # ties in |w| and |g| go to the lower flat index
    s = DynamicSparse(0.5, "uniform", 0.25, 1, 10)  # drop round(0.25 * 4) = 1
    tied = np.array([[0.1, 0.1, 0.0], [0.1, 0.1, 0.0]], np.float32)
    flat = np.zeros((2, 3), np.float32)
    new = rigl_update(0, {"l": {"kernel": tied}}, {"l": {"kernel": mask}},
                      {"l": {"kernel": flat}}, s)
    assert new.tolist() == [[True, True, False], [True, True, False]]  # 0 dropped, 0 regrown


def test_rigl_drops_the_smallest_and_grows_the_largest_dense_gradients(tmp_path):
    gradients = []
    plan, _, _, seen, check = recorded_run(
        tmp_path, ["pruning.method=rigl"], gradients=gradients
    )
    assert [step for step, *_ in seen] == [0, 50, 100]
    initial = seen[0][3]
    grown_anywhere = 0
    for (step, params, before, after), gradient, (_, state, opt_state) in zip(
        seen[1:], gradients[1:], check.states[1:], strict=True
    ):
        fraction = 0.3 * (1 + math.cos(math.pi * step / 150)) / 2
        mu, nu = adam_moments(opt_state)
        state = flatten(state)
        for path in plan.prunable:
            assert after[path].sum() == initial[path].sum(), (step, path)  # exact count
            count = round(fraction * before[path].sum())
            # the gradient is dense: pruned positions have one too
            assert np.count_nonzero(gradient[path][~before[path]]) > 0
            want = rigl_by_hand(
                params[path].ravel(), before[path].ravel(), gradient[path].ravel(), count
            )
            assert set(np.flatnonzero(after[path])) == want, (step, path)
            new = after[path] & ~before[path]  # grown: start at 0.0 with zero moments
            grown_anywhere += int(new.sum())
            assert np.all(state[path][new] == 0.0)
            assert np.all(mu[path][new] == 0.0) and np.all(nu[path][new] == 0.0)
            kept = after[path] & before[path]  # kept (or dropped and grown): their values
            assert np.array_equal(state[path][kept], params[path][kept])
    assert grown_anywhere > 0


def test_rigl_gradient_is_the_loss_gradient_of_the_next_steps_batch(tmp_path):
    """The dense gradient RigL is given: of the mean cross-entropy at the current weights on
    the batch the next step trains on, every weight included (computed here apart)."""
    import optax

    gradients = []
    plan, trainer, _, seen, _ = recorded_run(
        tmp_path, ["pruning.method=rigl"], until=51, gradients=gradients
    )
    step, params, _, _ = seen[1]
    x, y = trainer.feed.batch_at(step)

    def loss(p):
        logits, _ = plan.network.apply(p, plan.init_batch_stats, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    want = flatten(host_tree(jax.grad(loss)(jax.tree.map(jax.numpy.asarray, unflatten(params)))))
    for path in plan.prunable:
        np.testing.assert_allclose(gradients[1][path], want[path], rtol=1e-4, atol=1e-6)

