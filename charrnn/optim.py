"""Optimizers over a dict of parameter arrays (updated in place) and gradient clipping.

Every optimizer keeps per-parameter state arrays of the parameter's shape and dtype plus a step
count, exported by `state_arrays()` as "<kind>/<param name>" and "t" so a resumed run continues
bit-identically. The element-wise updates are the fused kernels in charrnn/kernels/optim.py.
"""

import math

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.kernels.optim import (
    adagrad_update,
    adam_update,
    rmsprop_update,
    sgd_update,
    sum_of_squares,
)


def _flat(array, shape):
    """A flat view that writes through to `array`; the kernels do no bounds checks, so check here."""
    if array.shape != shape:
        raise ValueError(f"array of shape {array.shape} where {shape} was expected")
    if not array.flags.c_contiguous:
        raise ValueError("optimizer arrays must be C-contiguous, or updates would land in a copy")
    return array.ravel()


class Optimizer:
    """Base class: subclasses name their state kinds, their defaults and one per-array update."""

    name = ""
    state_kinds = ()
    defaults = {}

    def __init__(self, params, lr, **hyper):
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            raise CharrnnError(
                f"unknown {self.name} setting(s) {', '.join(unknown)}; "
                f"valid settings are {', '.join(self.defaults) or 'none'}"
            )
        # Coerce to the defaults' types so hyper() stays JSON-able whatever numpy scalars came in.
        try:
            self._hyper = {key: type(default)(hyper.get(key, default)) for key, default in self.defaults.items()}
        except (TypeError, ValueError) as error:
            raise CharrnnError(f"bad {self.name} setting: {error}; settings are numbers") from None
        self._check_hyper()
        self.lr = lr
        self.t = 0
        self._shapes = {name: param.shape for name, param in params.items()}
        self._state = {
            kind: {name: np.zeros(param.shape, dtype=param.dtype) for name, param in params.items()}
            for kind in self.state_kinds
        }

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise CharrnnError(f"learning rate must be a positive number, got {value}; pass e.g. 2e-3")
        self._lr = value

    def hyper(self):
        """Name, learning rate and settings: `make_optimizer(**opt.hyper(), params=p)` rebuilds it."""
        return {"name": self.name, "lr": self.lr, **self._hyper}

    def step(self, params, grads):
        """One update of every parameter from its gradient, in place."""
        if params.keys() != self._shapes.keys():
            raise ValueError("step() got parameters other than those the optimizer was built for")
        self.t += 1
        for name, shape in self._shapes.items():
            param = params[name]
            states = [_flat(self._state[kind][name], shape) for kind in self.state_kinds]
            self._update(_flat(param, shape), _flat(grads[name], shape), states, param.dtype.type)

    def state_arrays(self):
        """Copies of the state as {"<kind>/<param name>": array, "t": int64 step count (0-d)}."""
        arrays = {
            f"{kind}/{name}": array.copy()
            for kind, per_param in self._state.items()
            for name, array in per_param.items()
        }
        arrays["t"] = np.array(self.t, dtype=np.int64)
        return arrays

    def load_state_arrays(self, arrays):
        """Restore state saved by `state_arrays()`; everything is checked before anything changes."""
        expected = {f"{kind}/{name}" for kind in self.state_kinds for name in self._shapes} | {"t"}
        missing, unexpected = sorted(expected - arrays.keys()), sorted(arrays.keys() - expected)
        if missing or unexpected:
            raise CharrnnError(
                f"saved {self.name} optimizer state does not match this model "
                f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'}); "
                "resume with the optimizer and model settings the checkpoint was trained with"
            )
        for key in sorted(expected - {"t"}):
            shape = self._shapes[key.split("/", 1)[1]]
            if np.shape(arrays[key]) != shape:
                raise CharrnnError(
                    f"saved optimizer state {key} has shape {np.shape(arrays[key])}, the model needs {shape}; "
                    "the checkpoint does not belong to this model"
                )
        t = np.asarray(arrays["t"])
        if t.size != 1 or t.dtype.kind not in "iu" or int(t.reshape(())) < 0:
            raise CharrnnError(
                "saved optimizer step count 't' is not a non-negative integer; the checkpoint is corrupt"
            )
        for kind, per_param in self._state.items():
            for name, array in per_param.items():
                np.copyto(array, arrays[f"{kind}/{name}"], casting="same_kind")
        self.t = int(t.reshape(()))

    def _check_hyper(self):
        pass

    def _update(self, param, grad, states, as_dtype):
        raise NotImplementedError

    def _require(self, condition, setting, rule):
        if not condition:
            raise CharrnnError(f"{self.name} {setting} must be {rule}, got {self._hyper[setting]}")


class Adam(Optimizer):
    name = "adam"
    state_kinds = ("m", "v")
    defaults = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}

    def _check_hyper(self):
        h = self._hyper
        self._require(0 <= h["beta1"] < 1, "beta1", "in [0, 1)")
        self._require(0 <= h["beta2"] < 1, "beta2", "in [0, 1)")
        self._require(h["eps"] > 0, "eps", "positive")
        self._require(h["weight_decay"] >= 0, "weight_decay", "zero or positive")

    def _update(self, param, grad, states, as_dtype):
        h = self._hyper
        # The bias corrections are computed in float64, then rounded once to the parameter dtype.
        bias1 = 1.0 - h["beta1"] ** self.t
        bias2 = 1.0 - h["beta2"] ** self.t
        adam_update(
            param,
            grad,
            *states,
            as_dtype(self.lr),
            as_dtype(h["beta1"]),
            as_dtype(h["beta2"]),
            as_dtype(h["eps"]),
            as_dtype(bias1),
            as_dtype(bias2),
            as_dtype(h["weight_decay"]),
        )


class RMSprop(Optimizer):
    name = "rmsprop"
    state_kinds = ("m",)
    defaults = {"alpha": 0.95, "eps": 1e-8}

    def _check_hyper(self):
        self._require(0 <= self._hyper["alpha"] < 1, "alpha", "in [0, 1)")
        self._require(self._hyper["eps"] > 0, "eps", "positive")

    def _update(self, param, grad, states, as_dtype):
        rmsprop_update(
            param, grad, *states, as_dtype(self.lr), as_dtype(self._hyper["alpha"]), as_dtype(self._hyper["eps"])
        )


class Adagrad(Optimizer):
    name = "adagrad"
    state_kinds = ("mem",)
    defaults = {"eps": 1e-8}

    def _check_hyper(self):
        self._require(self._hyper["eps"] > 0, "eps", "positive")

    def _update(self, param, grad, states, as_dtype):
        adagrad_update(param, grad, *states, as_dtype(self.lr), as_dtype(self._hyper["eps"]))


class SGD(Optimizer):
    name = "sgd"
    state_kinds = ("velocity",)
    defaults = {"momentum": 0.9, "nesterov": False}

    def _check_hyper(self):
        self._require(0 <= self._hyper["momentum"] < 1, "momentum", "in [0, 1)")
        self._require(
            self._hyper["momentum"] > 0 or not self._hyper["nesterov"], "momentum", "positive when nesterov is on"
        )

    def _update(self, param, grad, states, as_dtype):
        sgd_update(param, grad, *states, as_dtype(self.lr), as_dtype(self._hyper["momentum"]), self._hyper["nesterov"])


OPTIMIZERS = {cls.name: cls for cls in (Adam, RMSprop, Adagrad, SGD)}


def make_optimizer(name, params, lr, **hyper):
    """The optimizer called `name` over `params` (a dict of arrays), with settings overriding defaults."""
    if name not in OPTIMIZERS:
        raise CharrnnError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, **hyper)


def grad_norm(grads):
    """Global L2 norm over every gradient array, accumulated in float64."""
    return math.sqrt(sum(sum_of_squares(grad.ravel()) for grad in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global norm is at most max_norm; return the norm before.

    A non-finite norm is returned with the gradients untouched: the caller decides what to skip.
    """
    if not max_norm > 0:
        raise CharrnnError(f"gradient norm limit must be positive, got {max_norm}; pass e.g. 5")
    norm = grad_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for grad in grads.values():
            grad *= grad.dtype.type(scale)
    return norm


def clip_grad_value(grads, limit=5.0):
    """Clamp every gradient element to [-limit, limit] in place (char-rnn's grad_clip)."""
    if not limit > 0:
        raise CharrnnError(f"gradient value limit must be positive, got {limit}; pass e.g. 5")
    for grad in grads.values():
        np.clip(grad, -limit, limit, out=grad)
