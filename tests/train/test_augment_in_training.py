"""On-device augmentation is used by the train step (per step) and never by evaluation."""

import jax
import numpy as np

from lottery import data, models
from lottery.config import DatasetConfig, ModelConfig, OptimizerConfig
from lottery.data.augment import crop_flip
from lottery.pruning import full_mask
from lottery.train import Trainer


def make_trainer(augment):
    dataset = data.load(DatasetConfig(name="digits", validation_size=200))
    network = models.build(ModelConfig(name="mlp", hidden=[32]), dataset.input_shape, 10)
    trainer = Trainer(network, dataset, OptimizerConfig(name="sgd", lr=0.1), batch_size=50,
                      total_steps=20, steps_per_epoch=26, eval_batch_size=100,
                      data_seed=0, augment=augment)
    return trainer, network.init(jax.random.key(0))


def test_evaluation_is_the_same_with_augmentation_on_or_off():
    (on, (params, stats)), (off, _) = make_trainer(crop_flip), make_trainer(None)
    assert on.evaluate(params, stats) == off.evaluate(params, stats)


def test_training_sees_augmented_batches_that_change_from_step_to_step():
    (on, (params, stats)), (off, _) = make_trainer(crop_flip), make_trainer(None)
    mask = full_mask(params)

    def trained(trainer):
        return trainer.train(trainer.start(0, params, stats, mask), 20).state.params

    with_aug = trained(on)
    without = trained(off)
    assert not np.array_equal(with_aug["fc1"]["kernel"], without["fc1"]["kernel"])
    again = trained(make_trainer(crop_flip)[0])
    np.testing.assert_array_equal(with_aug["fc1"]["kernel"], again["fc1"]["kernel"])
    key = jax.random.key(3)
    images = np.broadcast_to(np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1), (16, 8, 8, 1))
    step_a = np.asarray(crop_flip(jax.random.fold_in(key, 0), images))
    step_b = np.asarray(crop_flip(jax.random.fold_in(key, 1), images))
    assert not np.array_equal(step_a, step_b), "a different step gets different crops"
    assert len({step_a[i].tobytes() for i in range(16)}) > 1, "examples get different crops"
