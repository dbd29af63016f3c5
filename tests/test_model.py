"""The model's compiled forward and hand-derived backward against NumPy and finite differences."""

import numpy as np
import pytest
from reference import numerical_gradient, reference_forward, relative_error

from charrnn.cells import CELLS as CELL_TABLE
from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig, NonFiniteLoss, parameter_shapes
from charrnn.plan import Plan

CELLS = list(CELL_TABLE)  # every cell type of the table: a new one is checked like the others
UNIT_CELLS = [cell for cell in CELLS if CELL_TABLE[cell].splits_units]  # those that can run the units split


def plan_cases(splits):
    """(cell, split, ...) for every cell and every split it can run."""
    return [(cell, *case) for cell in CELLS for case in splits if case[0] == "batch" or cell in UNIT_CELLS]


def tiny_problem(cell, carried_state, dropout=0.0, B=2, T=4, V=5, H=3, L=2, seed=0, weight_drop=0.0):
    config = ModelConfig(cell=cell, vocab_size=V, hidden=H, layers=L, dropout=dropout, weight_drop=weight_drop)
    rng = np.random.default_rng(seed)
    # Larger than the default init so every nonlinearity works away from its linear region.
    params = {n: rng.normal(0, 0.5, size=s) for n, s in parameter_shapes(config).items()}
    model = Model(config, params=params, dtype=np.float64)
    inputs = rng.integers(0, V, size=(B, T))
    targets = rng.integers(0, V, size=(B, T))
    state = model.initial_state(B)
    if carried_state:
        state[0] = rng.normal(0, 0.5, size=state[0].shape)
        if CELL_TABLE[cell].has_memory:
            state[1] = rng.normal(0, 0.5, size=state[1].shape)
    return model, inputs, targets, state


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("carried_state", [False, True])
def test_forward_matches_numpy_reference(cell, carried_state):
    model, inputs, targets, state = tiny_problem(cell, carried_state, B=3, T=6, V=7, H=4, L=3)
    loss, final = model.loss(inputs, targets, state)
    ref_loss, ref_final = reference_forward(model.config, model.params, inputs, targets, state)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    np.testing.assert_allclose(final, ref_final, rtol=1e-10, atol=1e-12)


def check_every_gradient(model, inputs, targets, state, dropout_seed=None, entries=None, floor=1e-9):
    """Finite differences of J = loss + <w, final state> against backward, over params and state."""
    rng = np.random.default_rng(123)
    final_weights = rng.normal(size=state.shape)
    if not model.cell.has_memory:
        final_weights[1] = 0.0

    def dropout_rng():
        return None if dropout_seed is None else np.random.default_rng(dropout_seed)

    def objective():
        loss, final = model.forward(inputs, targets, state, train=True, dropout_rng=dropout_rng())
        return loss + float((final_weights * final).sum())

    # Layer normalisation of a zero vector (h W_h from a zero state) divides by sqrt(eps), about
    # 1/316: its output turns that much faster, so the difference quotient needs a step as much
    # smaller to keep its truncation error down (a 1e-4 step was 1e-6 off; 2e-5 is 1e-8 off).
    step = 2e-5 if model.config.cell == "lnlstm" and not state[0].any() else 1e-4
    objective()
    grads = model.zeros_like_params()
    dstate = model.backward(grads, dfinal_state=final_weights)
    worst = 0.0
    targets_to_check = [(name, model.params[name], grads[name]) for name in model.params]
    targets_to_check.append(("state", state, dstate))
    for name, array, analytic in targets_to_check:
        indices = list(np.ndindex(array.shape))
        if entries is not None:
            picks = rng.choice(len(indices), size=min(entries, len(indices)), replace=False)
            indices = [indices[k] for k in picks]
        for index in indices:
            numeric = numerical_gradient(objective, array, index, step)
            error = relative_error(analytic[index], numeric, floor)
            worst = max(worst, error)
            assert error <= 1e-6, f"{name}{index}: analytic {analytic[index]} numeric {numeric}"
    return worst


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("carried_state", [False, True])
def test_every_gradient_entry_matches_finite_differences(cell, carried_state):
    model, inputs, targets, state = tiny_problem(cell, carried_state)
    check_every_gradient(model, inputs, targets, state)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_dropout_match_finite_differences(cell):
    model, inputs, targets, state = tiny_problem(cell, True, dropout=0.3)
    check_every_gradient(model, inputs, targets, state, dropout_seed=7)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_weight_drop_and_dropout_match_finite_differences(cell):
    model, inputs, targets, state = tiny_problem(cell, True, dropout=0.3, weight_drop=0.4, H=4)
    check_every_gradient(model, inputs, targets, state, dropout_seed=11)


@pytest.mark.parametrize("cell", CELLS)
def test_weight_drop_runs_the_window_on_masked_recurrent_weights(cell):
    model, inputs, targets, state = tiny_problem(cell, True, weight_drop=0.5, B=3, T=6, V=7, H=20, L=2)
    loss, final = model.forward(inputs, targets, state, train=True, dropout_rng=np.random.default_rng(4))
    masked = dict(model.params)
    for layer, (_dropped, mask) in enumerate(model._dropped_W_h):
        assert set(np.unique(mask)) == {0.0, 2.0}  # kept weights are scaled by 1 / (1 - p)
        assert 0.35 < np.mean(mask == 0.0) < 0.65
        masked[f"layer{layer}.W_h"] = model.params[f"layer{layer}.W_h"] * mask
    ref_loss, ref_final = reference_forward(model.config, masked, inputs, targets, state)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    np.testing.assert_allclose(final, ref_final, rtol=1e-10, atol=1e-12)
    # Evaluation uses the weights as they are.
    plain_loss, _ = model.loss(inputs, targets, state)
    assert plain_loss == pytest.approx(
        reference_forward(model.config, model.params, inputs, targets, state)[0], rel=1e-10
    )


@pytest.mark.parametrize("cell", CELLS)
def test_medium_size_gradient_sample(cell):
    model, inputs, targets, state = tiny_problem(cell, True, B=4, T=12, V=17, H=16, L=2, seed=3)
    for name in model.params:  # keep activations out of saturation at this width
        model.params[name] *= 0.3
    # Over 12 steps many entries are ~1e-6 small, where the difference quotient is only good to ~1e-11.
    check_every_gradient(model, inputs, targets, state, entries=25, floor=1e-4)


def test_gradient_accumulates():
    model, inputs, targets, state = tiny_problem("lstm", True)
    once = model.zeros_like_params()
    model.loss_and_grads(inputs, targets, state, once)
    twice = model.zeros_like_params()
    model.loss_and_grads(inputs, targets, state, twice)
    model.loss_and_grads(inputs, targets, state, twice)
    for name in once:
        np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cell", CELLS)
def test_single_steps_equal_the_sequence_forward(cell):
    model, inputs, targets, state = tiny_problem(cell, True, B=3, T=7)
    model.forward(inputs, None, state)
    sequence_logits = model.last_logits.reshape(7, 3, -1).copy()
    _, sequence_final = model.forward(inputs, None, state)
    stepped = state.copy()
    for t in range(7):
        logits = model.step(inputs[:, t], stepped)
        np.testing.assert_allclose(logits, sequence_logits[t], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(stepped, sequence_final, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_agrees_with_float64(cell):
    model64, inputs, targets, state = tiny_problem(cell, True, B=4, T=10, V=9, H=8)
    model32 = Model(model64.config, params=model64.params, dtype=np.float32)
    loss64, final64 = model64.loss(inputs, targets, state)
    loss32, final32 = model32.loss(inputs, targets, state.astype(np.float32))
    assert model32.params["out.W"].dtype == np.float32
    assert final32.dtype == np.float32
    assert abs(loss32 - loss64) < 1e-5 * abs(loss64)
    np.testing.assert_allclose(final32, final64, atol=1e-5)
    grads64, grads32 = model64.zeros_like_params(), model32.zeros_like_params()
    model64.loss_and_grads(inputs, targets, state, grads64)
    model32.loss_and_grads(inputs, targets, state.astype(np.float32), grads32)
    for name in grads64:
        assert grads32[name].dtype == np.float32
        np.testing.assert_allclose(grads32[name], grads64[name], atol=2e-5)


def test_record_matches_the_sequence_forward():
    model, inputs, _, _ = tiny_problem("lstm", False, B=1, T=9, L=2)
    recorded = model.record(inputs[0])
    _, final = model.forward(inputs, None, model.initial_state(1))
    np.testing.assert_allclose(recorded["h"][-1], final[0, :, 0])
    np.testing.assert_allclose(recorded["c"][-1], final[1, :, 0])
    assert recorded["gates"].shape == (9, 2, 12)
    assert recorded["logits"].shape == (9, 5)
    i_gate = recorded["gates"][:, :, :3]
    assert np.all((i_gate > 0) & (i_gate < 1))


def test_initialisation_is_seeded_and_sets_the_forget_bias():
    config = ModelConfig("lstm", vocab_size=10, hidden=6, layers=2)
    a, b, c = Model(config, seed=1), Model(config, seed=1), Model(config, seed=2)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["out.W"], c.params["out.W"])
    bias = a.params["layer1.b"]
    assert np.all(bias[6:12] == 1.0) and np.all(np.abs(bias[:6]) <= 0.08)
    assert a.num_parameters == sum(int(np.prod(s)) for s in parameter_shapes(config).values())


@pytest.mark.parametrize(
    "bad_inputs, message",
    [
        (np.array([[0, 1, 9]]), "outside this model's vocabulary"),
        (np.array([[0, -1, 2]]), "outside this model's vocabulary"),
        (np.array([[0.0, 1.0, 2.0]]), "integer"),
        (np.array([0, 1, 2]), "(batch, steps)"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad_inputs, message):
    model = Model(ModelConfig("lstm", vocab_size=5, hidden=3, layers=1))
    with pytest.raises(CharrnnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.loss(bad_inputs, np.zeros_like(bad_inputs, dtype=int), model.initial_state(1))


def test_mismatched_state_and_params_raise_clear_errors():
    model = Model(ModelConfig("lstm", vocab_size=5, hidden=3, layers=2))
    with pytest.raises(CharrnnError, match="state has shape"):
        model.loss(np.zeros((2, 3), int), np.zeros((2, 3), int), model.initial_state(1))
    params = dict(model.params)
    params["out.W"] = np.zeros((4, 5), np.float32)
    with pytest.raises(CharrnnError, match="out.W has shape"):
        Model(model.config, params=params)
    del params["out.W"]
    with pytest.raises(CharrnnError, match="missing"):
        Model(model.config, params=params)
    with pytest.raises(CharrnnError, match="unknown model type"):
        ModelConfig("transformer", 5, 3, 1)


def test_non_finite_loss_is_reported():
    model, inputs, targets, state = tiny_problem("lstm", False)
    model.params["out.b"][:] = np.nan
    with pytest.raises(NonFiniteLoss):
        model.loss_and_grads(inputs, targets, state, model.zeros_like_params())


def split_into(monkeypatch, model, split, threads):
    """Lets tiny test shapes split (the real minimum shares would keep them whole)."""
    monkeypatch.setattr("charrnn.plan.MIN_PART_ROWS", 1)
    monkeypatch.setattr("charrnn.plan.MIN_PART_UNITS", 1)
    model.plan = Plan(split, threads)


PLANS = [("batch", 3), ("units", 2), ("units", 3)]


@pytest.mark.parametrize("cell, split, threads", plan_cases(PLANS))
def test_every_plan_computes_the_same_window(cell, split, threads, monkeypatch):
    """In float64 every plan agrees with one thread to rounding (not to the bit: the BLAS sums a
    product in an order that depends on the shape of the call)."""
    model, inputs, targets, state = tiny_problem(cell, True, dropout=0.3, B=7, T=5, H=5, weight_drop=0.3)
    final_weights = np.random.default_rng(5).normal(size=state.shape)
    results = []
    for plan in (("batch", 1), (split, threads)):
        split_into(monkeypatch, model, *plan)
        grads = model.zeros_like_params()
        loss, final = model.forward(inputs, targets, state, train=True, dropout_rng=np.random.default_rng(9))
        assert model._last[2].split == plan[0]
        logits = model.last_logits.copy()
        dstate = model.backward(grads, dfinal_state=final_weights)
        results.append((loss, final, logits, dstate, grads))
    (loss1, *arrays1, grads1), (loss3, *arrays3, grads3) = results
    assert abs(loss1 - loss3) <= 1e-13 * abs(loss1)
    for one, three in zip(arrays1, arrays3):
        np.testing.assert_allclose(three, one, rtol=1e-12, atol=1e-14)
    for name in grads1:
        np.testing.assert_allclose(grads3[name], grads1[name], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("cell, split", plan_cases([("batch",), ("units",)]))
def test_gradients_of_a_split_window_match_finite_differences(cell, split, monkeypatch):
    model, inputs, targets, state = tiny_problem(cell, True, dropout=0.2, B=4, H=4, weight_drop=0.2)
    split_into(monkeypatch, model, split, 2)
    check_every_gradient(model, inputs, targets, state, dropout_seed=3)
    assert model._last[2].split == split


@pytest.mark.parametrize("split", ["batch", "units"])
def test_split_gradients_accumulate_into_the_callers_arrays(split, monkeypatch):
    model, inputs, targets, state = tiny_problem("gru", True, B=4)
    split_into(monkeypatch, model, split, 2)
    once = model.zeros_like_params()
    model.loss_and_grads(inputs, targets, state, once)
    twice = {name: grad.copy() for name, grad in once.items()}
    model.loss_and_grads(inputs, targets, state, twice)
    for name in once:
        np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cell, split", plan_cases([("batch",), ("units",)]))
def test_a_split_window_gives_the_same_bits_every_time(cell, split):
    """Two threads, float32, repeated: no product may change its summation order with thread timing
    (the BLAS's thread count was once set per slice, which raced)."""
    config = ModelConfig(cell, vocab_size=11, hidden=64, layers=2, dropout=0.2, weight_drop=0.2)
    model = Model(config, seed=1, plan=Plan(split, 2))
    rng = np.random.default_rng(2)
    inputs, targets = rng.integers(0, 11, size=(2, 40, 30))
    state = model.initial_state(40)
    first = None
    for _ in range(8):
        grads = model.zeros_like_params()
        loss, final = model.loss_and_grads(inputs, targets, state, grads, np.random.default_rng(3))
        assert model._last[2].split == split
        result = (loss, final, model.last_logits.copy(), grads)
        if first is None:
            first = result
            continue
        assert result[0] == first[0]
        assert np.array_equal(result[1], first[1]) and np.array_equal(result[2], first[2])
        assert all(np.array_equal(result[3][name], first[3][name]) for name in grads)


@pytest.mark.parametrize("cell", UNIT_CELLS)
def test_recorded_gates_are_in_the_natural_order_under_every_plan(cell, monkeypatch):
    model, inputs, _, _ = tiny_problem(cell, False, H=6)
    ids = inputs[0]
    plain = model.record(ids)
    split_into(monkeypatch, model, "units", 3)
    split = model.record(ids)
    assert model._last[2].split == "units"
    for name in plain:
        np.testing.assert_allclose(split[name], plain[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", [cell for cell in CELLS if cell not in UNIT_CELLS])
def test_cells_that_need_every_unit_refuse_the_units_split(cell):
    config = ModelConfig(cell, vocab_size=5, hidden=64, layers=1)
    with pytest.raises(CharrnnError, match="cannot share their units between threads.*batch split"):
        Model(config, plan=Plan("units", 2))
    model = Model(config, plan=Plan("batch", 2))
    assert model.plan.split == "batch"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stream_shares_add_up_to_the_whole_batch(cell):
    """Processes that each train a share of the streams (charrnn.distributed) draw the whole batch's
    dropout masks and scale by the whole batch: their losses and gradients add up to one process's."""
    model, inputs, targets, state = tiny_problem(cell, True, dropout=0.3, B=6, T=5, H=5, weight_drop=0.3)
    whole = model.zeros_like_params()
    loss, final = model.loss_and_grads(inputs, targets, state, whole, np.random.default_rng(4))
    summed, losses, finals = model.zeros_like_params(), [], []
    for rows in (slice(0, 2), slice(2, 6)):
        model.stream_share = (rows.start, 6)
        grads = model.zeros_like_params()
        share_loss, share_final = model.loss_and_grads(
            inputs[rows], targets[rows], state[:, :, rows], grads, np.random.default_rng(4)
        )
        losses.append(share_loss)
        finals.append(share_final)
        for name in summed:
            summed[name] += grads[name]
    assert abs(sum(losses) - loss) <= 1e-12 * abs(loss)
    np.testing.assert_allclose(np.concatenate(finals, axis=2), final, rtol=1e-12, atol=1e-14)
    for name in whole:
        np.testing.assert_allclose(summed[name], whole[name], rtol=1e-10, atol=1e-14)
    shared_eval = model.loss(inputs[2:], targets[2:], state[:, :, 2:])[0]  # evaluation is never a share
    model.stream_share = None
    assert shared_eval == model.loss(inputs[2:], targets[2:], state[:, :, 2:])[0]
