"""The fallbacks charrnn.portable chooses on other machines, run here by forcing them (CHARRNN_PORTABLE=1):
no PAUSE in the spin barrier, and a BLAS left unpinned with charrnn on one thread of its own."""

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import json, sys
import numpy as np
import charrnn.plan
from charrnn import parallel, portable
from charrnn.model import Model, ModelConfig
from charrnn.optim import make_optimizer
from charrnn.plan import Plan
from charrnn.sampling import Sampler

charrnn.plan.MIN_PART_UNITS = 1  # let a small model split its units between two threads
losses = []
for split in ("batch", "units"):
    model = Model(ModelConfig("lstm", 7, 8, 2), seed=3, plan=Plan(split, 2))
    optimizer = make_optimizer("adam", model.params, 0.01)
    ids = np.random.default_rng(4).integers(0, 7, size=(2, 3, 12))
    for _ in range(5):
        grads = model.zeros_like_params()
        loss, _ = model.loss_and_grads(ids[0], ids[1], model.initial_state(3), grads)
        optimizer.step(model.params, grads)
        losses.append(loss)
sampler = Sampler(model, 1, argmax=True, threads=2)
text = sampler.sample(40).ravel().tolist()
print(json.dumps({"forced": portable.FORCED, "x86": portable.X86, "budget": parallel.thread_budget(),
                  "split": model._last[2].split, "losses": losses, "ids": text}))
"""


def run(tmp_path, forced):
    env = dict(os.environ)
    env.pop("CHARRNN_PORTABLE", None)
    if forced:  # its own compile cache, so no kernel compiled with the native choices is loaded
        env.update(CHARRNN_PORTABLE="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_forced_fallbacks_train_and_sample_what_the_native_paths_do(tmp_path):
    native, fallback = run(tmp_path, False), run(tmp_path, True)
    assert fallback["forced"] and not fallback["x86"] and fallback["budget"] == 1
    assert native["split"] == fallback["split"] == "units"  # the barrier ran on two threads in both
    # The unpinned BLAS may thread its products, so losses agree to float32 rounding, not to the bit.
    np.testing.assert_allclose(fallback["losses"], native["losses"], rtol=1e-5)
    assert fallback["ids"] == native["ids"]
