"""Seeded, deterministic Keras training: the same seed, data, code, library versions and
machine give bit-identical weights, in any process, whatever else that process does.

:func:`seed_training` is called where a training (or a fine-tune) starts, in place of
``keras.utils.set_random_seed``. Besides seeding Python, NumPy, TensorFlow and Keras'
global seed generator, it:

- makes TensorFlow run its ops deterministically
  (``tf.config.experimental.enable_op_determinism``; process-wide, and it stays on);
- gives Keras a generator of its own for the seeds it draws. Keras seeds every layer and
  initializer made without a seed (each kernel's initial values, Dropout's masks) with
  ``random.randint`` on Python's *global* generator, which every thread of the process
  shares: in a flow run Prefect's own threads draw from it too, so the seeds a model got
  depended on when they did.

The data order is the caller's: seeded by epoch (``tasks.train.ShuffledBatches``, fitted
with Keras' own batch shuffle off, which draws from Python's global generator), or by
TensorFlow's seeded shuffle (``model.fit`` on arrays).

What still differs across machines (README, "Reproducibility"): TensorFlow's float
arithmetic depends on the number of intra-op threads (the cores it sees;
``TF_NUM_INTRAOP_THREADS`` pins it) and on the CPU (oneDNN picks AVX2, AVX-512 or AMX
kernels at run time, Eigen blocks by cache size; ARM differs again): the same run there
gives other weights, equally good.
"""

from __future__ import annotations

import random

# Where Keras draws the seed of anything made without one (keras.random.SeedGenerator):
# `make_default_seed` calls `python_random.randint` in this module.
KERAS_SEED_MODULE = "keras.src.random.seed_generator"


def seed_training(seed: int) -> None:
    """Seed every random source a Keras training reads and make TensorFlow deterministic;
    from here on, what Keras draws for unseeded layers comes from a generator seeded with
    ``seed`` that no other code of the process draws from."""
    import importlib

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    module = importlib.import_module(KERAS_SEED_MODULE)
    # A library workaround: Keras has no public way to seed these draws apart from the
    # global generator (tests/tasks/test_train.py fails if this stops working).
    module.python_random = random.Random(seed)
