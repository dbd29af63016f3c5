"""The same weights in torch.nn.LSTM/GRU/RNN give the same loss and gradients (optional: needs torch)."""

import numpy as np
import pytest

from charrnn.export import DECODER, params_from_torch, torch_state_dict
from charrnn.model import Model, ModelConfig, parameter_shapes

torch = pytest.importorskip("torch")


class TorchTwin(torch.nn.Module):
    """torch.nn.LSTM/GRU/RNN and a Linear decoder holding charrnn's weights as charrnn.export maps them."""

    def __init__(self, config, params):
        super().__init__()
        V, H, L, cell = config.vocab_size, config.hidden, config.layers, config.cell
        rnn_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.rnn = rnn_class(V, H, num_layers=L, batch_first=True).double()
        self.out = torch.nn.Linear(H, V).double()
        self.config, self.cell, self.V = config, cell, V
        tensors = {name: torch.from_numpy(array) for name, array in torch_state_dict(config, params).items()}
        self.rnn.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(DECODER)})
        self.out.load_state_dict({k.removeprefix(DECODER): v for k, v in tensors.items() if k.startswith(DECODER)})

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
        grads = {name: p.grad.numpy() for name, p in self.rnn.named_parameters()}
        grads.update({DECODER + name: p.grad.numpy() for name, p in self.out.named_parameters()})
        return params_from_torch(self.config, grads)


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
