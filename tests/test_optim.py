import io
import json

import numpy as np
import pytest

from charrnn.errors import CharrnnError
from charrnn.kernels import optim as kernels
from charrnn.optim import OPTIMIZERS, clip_grad_norm, clip_grad_value, grad_norm, make_optimizer

SHAPES = {"layer0.W_x": (5, 12), "layer0.b": (12,), "out.W": (3, 5)}


def random_arrays(rng, dtype=np.float64):
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


# Plain NumPy references, written from the published update rules, one parameter at a time.
# Each takes (param, grad, state dict, step t, lr, **settings) and returns the new param.
def reference_adam(p, g, s, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g**2
    m_hat = s["m"] / (1 - beta1**t)
    v_hat = s["v"] / (1 - beta2**t)
    return p - lr * weight_decay * p - lr * m_hat / (np.sqrt(v_hat) + eps)


def reference_rmsprop(p, g, s, t, lr, alpha=0.95, eps=1e-8):
    s["m"] = alpha * s.get("m", 0.0) + (1 - alpha) * g**2
    return p - lr * g / (np.sqrt(s["m"]) + eps)


def reference_adagrad(p, g, s, t, lr):
    s["mem"] = s.get("mem", 0.0) + g**2
    return p - lr * g / np.sqrt(s["mem"] + 1e-8)


def reference_sgd(p, g, s, t, lr, momentum=0.9, nesterov=False):
    s["buf"] = momentum * s.get("buf", 0.0) + g
    return p - lr * (g + momentum * s["buf"] if nesterov else s["buf"])


REFERENCES = {"adam": reference_adam, "rmsprop": reference_rmsprop, "adagrad": reference_adagrad, "sgd": reference_sgd}

CASES = [
    ("adam", {}),
    ("adam", {"weight_decay": 0.1, "beta1": 0.8}),
    ("rmsprop", {}),
    ("adagrad", {}),
    ("sgd", {}),
    ("sgd", {"nesterov": True}),
    ("sgd", {"momentum": 0.0}),
]


@pytest.mark.parametrize("name, settings", CASES)
def test_matches_numpy_reference_over_several_steps(name, settings):
    rng = np.random.default_rng(1)
    params = random_arrays(rng)
    expected = {key: value.copy() for key, value in params.items()}
    reference_state = {key: {} for key in params}
    lr = 0.05
    optimizer = make_optimizer(name, params, lr, **settings)
    for t in range(1, 7):
        if t == 4:  # a decayed learning rate must take effect on the next step
            lr = optimizer.lr = lr * 0.5
        grads = random_arrays(rng)
        optimizer.step(params, grads)
        for key in params:
            expected[key] = REFERENCES[name](expected[key], grads[key], reference_state[key], t, lr, **settings)
    for key in params:
        np.testing.assert_allclose(params[key], expected[key], rtol=1e-12, atol=1e-12)
        assert not np.array_equal(params[key], random_arrays(np.random.default_rng(1))[key])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_stays_float32(name):
    rng = np.random.default_rng(2)
    params = random_arrays(rng, np.float32)
    expected = {key: value.astype(np.float64) for key, value in params.items()}
    reference_state = {key: {} for key in params}
    optimizer = make_optimizer(name, params, 0.01)
    for t in range(1, 4):
        grads = random_arrays(rng, np.float32)
        optimizer.step(params, grads)
        for key in params:
            expected[key] = REFERENCES[name](
                expected[key], grads[key].astype(np.float64), reference_state[key], t, 0.01
            )
    for key, param in params.items():
        assert param.dtype == np.float32
        np.testing.assert_allclose(param, expected[key], rtol=1e-5, atol=1e-5)
    assert all(array.dtype == np.float32 for key, array in optimizer.state_arrays().items() if key != "t")
    # Every compiled float32 update must have received float32 scalars, never float64 ones.
    kernel = {
        "adam": kernels.adam_update,
        "rmsprop": kernels.rmsprop_update,
        "adagrad": kernels.adagrad_update,
        "sgd": kernels.sgd_update,
    }[name]
    float32_signatures = [sig for sig in kernel.nopython_signatures if str(sig.args[0].dtype) == "float32"]
    assert float32_signatures
    for signature in float32_signatures:
        assert "float64" not in str(signature.args)


@pytest.mark.parametrize("name, settings", CASES)
def test_resume_from_saved_state_is_bit_identical(name, settings):
    rng = np.random.default_rng(3)
    start = random_arrays(rng, np.float32)
    grad_steps = [random_arrays(rng, np.float32) for _ in range(6)]

    straight = {key: value.copy() for key, value in start.items()}
    optimizer = make_optimizer(name, straight, 0.01, **settings)
    for grads in grad_steps:
        optimizer.step(straight, grads)

    resumed = {key: value.copy() for key, value in start.items()}
    first = make_optimizer(name, resumed, 0.01, **settings)
    for grads in grad_steps[:3]:
        first.step(resumed, grads)
    buffer = io.BytesIO()  # through an .npz file, as a checkpoint would store it
    np.savez(buffer, **first.state_arrays())
    buffer.seek(0)
    saved = dict(np.load(buffer, allow_pickle=False))
    hyper = json.loads(json.dumps(first.hyper()))
    second = make_optimizer(**hyper, params=resumed)
    second.load_state_arrays(saved)
    assert second.t == 3 and second.hyper() == first.hyper()
    for grads in grad_steps[3:]:
        second.step(resumed, grads)

    for key in start:
        assert np.array_equal(resumed[key], straight[key])
    for key, array in optimizer.state_arrays().items():
        assert np.array_equal(second.state_arrays()[key], array)


def test_state_arrays_names_and_step_count():
    params = random_arrays(np.random.default_rng(4))
    optimizer = make_optimizer("adam", params, 0.01)
    optimizer.step(params, random_arrays(np.random.default_rng(5)))
    state = optimizer.state_arrays()
    assert set(state) == {f"{kind}/{key}" for kind in ("m", "v") for key in SHAPES} | {"t"}
    assert state["t"].dtype == np.int64 and int(state["t"]) == 1
    assert state["v/layer0.W_x"].shape == SHAPES["layer0.W_x"]
    state["m/out.W"][...] = 99.0  # a copy: changing it must not touch the optimizer
    assert not np.any(optimizer.state_arrays()["m/out.W"] == 99.0)


def test_load_state_rejects_mismatches_without_changing_anything():
    params = random_arrays(np.random.default_rng(6))
    optimizer = make_optimizer("adam", params, 0.01)
    optimizer.step(params, random_arrays(np.random.default_rng(7)))
    good = optimizer.state_arrays()

    missing = {key: value for key, value in good.items() if key != "v/out.W"}
    extra = {**good, "m/layer1.W_x": np.zeros(3)}
    wrong_shape = {**good, "m/layer0.b": np.zeros(13)}
    other_optimizer = make_optimizer("rmsprop", params, 0.01).state_arrays()
    for bad_t in (np.array(-1, np.int64), np.array([1, 2], np.int64), np.array(1.5)):
        with pytest.raises(CharrnnError, match="step count"):
            optimizer.load_state_arrays({**good, "t": bad_t})
    for bad in (missing, extra, other_optimizer):
        with pytest.raises(CharrnnError, match="does not match"):
            optimizer.load_state_arrays(bad)
    with pytest.raises(CharrnnError, match="m/layer0.b"):
        optimizer.load_state_arrays(wrong_shape)
    after = optimizer.state_arrays()
    assert all(np.array_equal(after[key], good[key]) for key in good)

    optimizer.load_state_arrays({**good, "t": np.array([5], np.int64)})  # 1-element t is fine too
    assert optimizer.t == 5


def test_bad_names_and_settings_raise():
    params = random_arrays(np.random.default_rng(8))
    with pytest.raises(CharrnnError) as error:
        make_optimizer("adamw", params, 0.01)
    assert all(name in str(error.value) for name in ("adam", "rmsprop", "adagrad", "sgd"))
    with pytest.raises(CharrnnError, match="decay"):
        make_optimizer("rmsprop", params, 0.01, decay=0.9)
    for lr in (0.0, -1.0, float("nan")):
        with pytest.raises(CharrnnError, match="learning rate"):
            make_optimizer("sgd", params, lr)
    with pytest.raises(CharrnnError, match="beta2"):
        make_optimizer("adam", params, 0.01, beta2=1.0)
    with pytest.raises(CharrnnError, match="nesterov"):
        make_optimizer("sgd", params, 0.01, momentum=0.0, nesterov=True)
    optimizer = make_optimizer("adam", params, 0.01)
    with pytest.raises(CharrnnError, match="learning rate"):
        optimizer.lr = 0.0
    with pytest.raises(ValueError):
        optimizer.step(params, {**params, "out.W": np.zeros((5, 3))})
    with pytest.raises(ValueError):
        optimizer.step({**params, "out.W": np.zeros((5, 3)).T}, params)  # not C-contiguous


def test_hyper_is_json_and_lists_settings():
    params = random_arrays(np.random.default_rng(9))
    hyper = make_optimizer("adam", params, np.float32(0.5), weight_decay=np.float64(0.01)).hyper()
    assert json.loads(json.dumps(hyper)) == {
        "name": "adam",
        "lr": 0.5,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.01,
    }
    assert make_optimizer("sgd", params, 0.1).hyper() == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False}


@pytest.mark.parametrize("name, lr", [("adam", 0.1), ("rmsprop", 0.02), ("adagrad", 0.5), ("sgd", 0.05)])
def test_minimises_a_quadratic(name, lr):
    curvature = np.array([1.0, 3.0, 0.5, 2.0])
    target = np.array([1.0, -2.0, 0.5, 3.0])
    params = {"x": np.zeros(4)}

    def loss():
        return 0.5 * np.sum(curvature * (params["x"] - target) ** 2)

    initial = loss()
    optimizer = make_optimizer(name, params, lr)
    for _ in range(300):
        optimizer.step(params, {"x": curvature * (params["x"] - target)})
    assert loss() < 1e-3 * initial


def test_grad_norm_is_global_and_float64_accurate():
    rng = np.random.default_rng(10)
    grads = {"a": rng.standard_normal((300, 400)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    exact = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    assert grad_norm(grads) == pytest.approx(exact, rel=1e-12)


def test_clip_grad_norm_scales_only_above_the_limit():
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}
    assert clip_grad_norm(grads, 20.0) == pytest.approx(13.0)
    assert np.array_equal(grads["a"], [3.0, 4.0])

    assert clip_grad_norm(grads, 6.5) == pytest.approx(13.0)
    np.testing.assert_allclose(grads["a"], [1.5, 2.0])
    np.testing.assert_allclose(grads["b"], [[6.0]])
    assert grad_norm(grads) == pytest.approx(6.5)

    grads32 = {"a": np.full(10, 10.0, np.float32)}
    clip_grad_norm(grads32, 1.0)
    assert grads32["a"].dtype == np.float32
    assert grad_norm(grads32) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_leaves_non_finite_gradients_alone(bad):
    grads = {"a": np.array([3.0, bad]), "b": np.array([100.0])}
    before = {key: value.copy() for key, value in grads.items()}
    norm = clip_grad_norm(grads, 1.0)
    assert not np.isfinite(norm)
    for key in grads:
        np.testing.assert_array_equal(grads[key], before[key])


def test_clip_grad_value_clamps_each_element():
    grads = {"a": np.array([-7.0, -5.0, 0.3, 4.9, 12.0], np.float32), "b": np.array([[6.0, -1.0]])}
    clip_grad_value(grads, 5.0)
    np.testing.assert_array_equal(grads["a"], np.array([-5.0, -5.0, 0.3, 4.9, 5.0], np.float32))
    np.testing.assert_array_equal(grads["b"], [[5.0, -1.0]])
    assert grads["a"].dtype == np.float32


def test_clip_limits_must_be_positive():
    with pytest.raises(CharrnnError):
        clip_grad_norm({"a": np.ones(2)}, 0.0)
    with pytest.raises(CharrnnError):
        clip_grad_value({"a": np.ones(2)}, -1.0)
