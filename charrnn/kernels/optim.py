"""Fused per-parameter optimizer updates: one pass over flat (1-D) views, updating in place.

Callers pass scalars of the parameter's dtype; constants here are built with `param.dtype.type`
because a bare literal like 1.0 is float64 to Numba and would promote a float32 update.
"""

import numpy as np

from charrnn.jit import njit


@njit
def adam_update(param, grad, m, v, lr, beta1, beta2, eps, bias1, bias2, weight_decay):
    """Adam with bias corrections bias1 = 1 - beta1^t, bias2 = 1 - beta2^t and decoupled (AdamW) decay."""
    one = param.dtype.type(1)
    for i in range(param.size):
        g = grad[i]
        m[i] = beta1 * m[i] + (one - beta1) * g
        v[i] = beta2 * v[i] + (one - beta2) * g * g
        m_hat = m[i] / bias1
        v_hat = v[i] / bias2
        p = param[i]
        param[i] = p - lr * weight_decay * p - lr * m_hat / (np.sqrt(v_hat) + eps)


@njit
def rmsprop_update(param, grad, mean_sq, lr, alpha, eps):
    """karpathy/char-rnn's optim.rmsprop: eps is added after the square root."""
    one = param.dtype.type(1)
    for i in range(param.size):
        g = grad[i]
        mean_sq[i] = alpha * mean_sq[i] + (one - alpha) * g * g
        param[i] -= lr * g / (np.sqrt(mean_sq[i]) + eps)


@njit
def adagrad_update(param, grad, sum_sq, lr, eps):
    """min-char-rnn's Adagrad: eps is added inside the square root."""
    for i in range(param.size):
        g = grad[i]
        sum_sq[i] += g * g
        param[i] -= lr * g / np.sqrt(sum_sq[i] + eps)


@njit
def sgd_update(param, grad, velocity, lr, momentum, nesterov):
    """SGD with momentum in PyTorch's form: velocity = momentum * velocity + grad."""
    for i in range(param.size):
        g = grad[i]
        velocity[i] = momentum * velocity[i] + g
        if nesterov:
            param[i] -= lr * (g + momentum * velocity[i])
        else:
            param[i] -= lr * velocity[i]


@njit
def sum_of_squares(x):
    """Sum of x^2 accumulated in float64, so a large float32 gradient keeps its precision."""
    total = 0.0
    for i in range(x.size):
        value = np.float64(x[i])
        total += value * value
    return total
