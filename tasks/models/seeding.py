"""Seeded, deterministic Keras training: the same seed, data, code, library versions and
machine give bit-identical weights, in any process, whatever else that process does.

:func:`seed_training` is called where a training (or a fine-tune) starts, in place of
``keras.utils.set_random_seed``. Besides seeding Python, NumPy, TensorFlow and Keras'
global seed generator, it:

- makes TensorFlow run its ops deterministically
  (``tf.config.experimental.enable_op_determinism``; process-wide, and it stays on);
- gives Keras generators of its own for what it draws from Python's ``random``. Keras
  seeds every layer and initializer made without a seed (each kernel's initial values,
  Dropout's masks) with ``random.randint``, and shuffles the batches of a ``PyDataset``
  with ``random.shuffle``, both on Python's *global* generator, which every thread of
  the process shares: in a flow run Prefect's own threads draw from it too, so the seeds
  a model got and its batch order depended on when they did.

The data order is otherwise the caller's: seeded by epoch (``tasks.train.ShuffledBatches``,
fitted with Keras' batch shuffle off), or TensorFlow's seeded shuffle (``model.fit`` on
arrays).

What still differs across machines (README, "Reproducibility"): TensorFlow's float
arithmetic depends on the number of intra-op threads (the cores it sees;
``TF_NUM_INTRAOP_THREADS`` pins it) and on the CPU (oneDNN picks AVX2, AVX-512 or AMX
kernels at run time, Eigen blocks by cache size; ARM differs again): the same run there
gives other weights, equally good.
"""

from __future__ import annotations

import random

# Keras' modules that draw from Python's global generator, and the name each imports it
# as: `make_default_seed` (the seed of any SeedGenerator made without one) calls
# `python_random.randint`; a PyDataset's batch order is `random.shuffle`d.
KERAS_RANDOM_USERS = {"keras.src.random.seed_generator": "python_random",
                      "keras.src.trainers.data_adapters.py_dataset_adapter": "random"}


def seed_training(seed: int) -> None:
    """Seed every random source a Keras training reads and make TensorFlow deterministic;
    from here on, what Keras draws from Python's ``random`` (seeds of unseeded layers, a
    PyDataset's batch order) comes from generators seeded with ``seed`` that no other
    code of the process draws from."""
    import importlib

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    # A library workaround: Keras has no public way to seed these draws apart from the
    # global generator (tests/tasks/test_train.py fails if this stops working). One
    # generator each, so that what one draws does not move the other.
    for name, attribute in KERAS_RANDOM_USERS.items():
        setattr(importlib.import_module(name), attribute, random.Random(seed))
