"""The same weights in torch.nn.LSTM/GRU/RNN give the same loss and gradients (optional: needs torch)."""

import numpy as np
import pytest

from charrnn.model import Model, ModelConfig, parameter_shapes

torch = pytest.importorskip("torch")

# charrnn's LSTM blocks are i, f, o, g; PyTorch's are i, f, g, o.
LSTM_TO_TORCH = [0, 1, 3, 2]


def torch_order(cell, matrix, H):
    """Rows of a (G*H, ...) torch weight from charrnn's (..., G*H) block layout."""
    blocks = np.split(matrix, matrix.shape[-1] // H, axis=-1)
    if cell == "lstm":
        blocks = [blocks[k] for k in LSTM_TO_TORCH]
    return np.concatenate(blocks, axis=-1).T.copy()


def charrnn_order(cell, torch_matrix, H):
    """Inverse of torch_order, for comparing gradients."""
    matrix = torch_matrix.T
    blocks = np.split(matrix, matrix.shape[-1] // H, axis=-1)
    if cell == "lstm":
        blocks = [blocks[LSTM_TO_TORCH.index(k)] for k in range(4)]
    return np.concatenate(blocks, axis=-1)


class TorchTwin(torch.nn.Module):
    def __init__(self, config, params):
        super().__init__()
        V, H, L, cell = config.vocab_size, config.hidden, config.layers, config.cell
        rnn_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.rnn = rnn_class(V, H, num_layers=L, batch_first=True).double()
        self.out = torch.nn.Linear(H, V).double()
        self.cell, self.V, self.H, self.L = cell, V, H, L
        with torch.no_grad():
            for layer in range(L):
                getattr(self.rnn, f"weight_ih_l{layer}").copy_(
                    torch.from_numpy(torch_order(cell, params[f"layer{layer}.W_x"], H))
                )
                getattr(self.rnn, f"weight_hh_l{layer}").copy_(
                    torch.from_numpy(torch_order(cell, params[f"layer{layer}.W_h"], H))
                )
                getattr(self.rnn, f"bias_ih_l{layer}").copy_(
                    torch.from_numpy(torch_order(cell, params[f"layer{layer}.b"][None], H)[:, 0])
                )
                hidden_bias = np.zeros(params[f"layer{layer}.b"].shape)
                if cell == "gru":  # PyTorch keeps the candidate's recurrent bias inside r * (...)
                    hidden_bias[2 * H :] = params[f"layer{layer}.b_hn"]
                getattr(self.rnn, f"bias_hh_l{layer}").copy_(torch.from_numpy(hidden_bias))
            self.out.weight.copy_(torch.from_numpy(params["out.W"].T.copy()))
            self.out.bias.copy_(torch.from_numpy(params["out.b"]))

    def loss(self, inputs, targets, state):
        x = torch.nn.functional.one_hot(torch.from_numpy(inputs).long(), self.V).double()
        h0 = torch.from_numpy(state[0].copy())
        carried = (h0, torch.from_numpy(state[1].copy())) if self.cell == "lstm" else h0
        output, _ = self.rnn(x, carried)
        logits = self.out(output)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, self.V), torch.from_numpy(targets).long().reshape(-1)
        )

    def charrnn_grads(self):
        grads = {}
        for layer in range(self.L):
            grads[f"layer{layer}.W_x"] = charrnn_order(
                self.cell, getattr(self.rnn, f"weight_ih_l{layer}").grad.numpy(), self.H
            )
            grads[f"layer{layer}.W_h"] = charrnn_order(
                self.cell, getattr(self.rnn, f"weight_hh_l{layer}").grad.numpy(), self.H
            )
            bias_ih = getattr(self.rnn, f"bias_ih_l{layer}").grad.numpy()
            bias_hh = getattr(self.rnn, f"bias_hh_l{layer}").grad.numpy()  # only b_hn is ours alone
            grads[f"layer{layer}.b"] = charrnn_order(self.cell, bias_ih[:, None], self.H)[0]
            if self.cell == "gru":
                grads[f"layer{layer}.b_hn"] = bias_hh[2 * self.H :]
        grads["out.W"] = self.out.weight.grad.numpy().T
        grads["out.b"] = self.out.bias.grad.numpy()
        return grads


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_loss_and_gradients_match_pytorch(cell):
    B, T, V, H, L = 3, 7, 11, 6, 2
    config = ModelConfig(cell, V, H, L)
    rng = np.random.default_rng(5)
    params = {n: rng.normal(0, 0.4, size=s) for n, s in parameter_shapes(config).items()}
    model = Model(config, params=params, dtype=np.float64)
    inputs, targets = rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))
    state = model.initial_state(B)
    state[0] = rng.normal(0, 0.5, size=state[0].shape)
    if cell == "lstm":
        state[1] = rng.normal(0, 0.5, size=state[1].shape)

    grads = model.zeros_like_params()
    loss, _ = model.loss_and_grads(inputs, targets, state, grads)

    twin = TorchTwin(config, params)
    torch_loss = twin.loss(inputs, targets, state)
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-10)
    torch_grads = twin.charrnn_grads()
    for name in grads:
        np.testing.assert_allclose(grads[name], torch_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
