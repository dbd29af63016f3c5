"""Compares initialisations of layer 0's input rows by validation loss after a short training run.

    python scripts/init_experiment.py --hidden 128 --iters 400 --lr 2e-3 --input-std 0.08 1.0

For each --input-std (0.08 means char-rnn's uniform +-0.08, anything else N(0, std)), trains a 2-layer
LSTM on Tiny Shakespeare's first 90% (B=50, T=100, Adam, element clip 5) from the same seed and prints
the training loss every 100 iterations and the validation loss (last 10%) at the end.
"""

import argparse

import numpy as np

from charrnn.data import BatchLoader, load_corpus, split_corpus
from charrnn.evaluate import evaluate_loss
from charrnn.model import INIT_RANGE, Model, ModelConfig
from charrnn.optim import clip_grad_value, make_optimizer


def run(splits, hidden, input_std, lr, iters, seq_length):
    model = Model(ModelConfig("lstm", 65, hidden, 2), seed=1)
    rows = model.params["layer0.W_x"]
    rng = np.random.default_rng(7)
    if input_std == INIT_RANGE:
        rows[...] = rng.uniform(-INIT_RANGE, INIT_RANGE, rows.shape)
    else:
        rows[...] = rng.normal(0.0, input_std, rows.shape)
    optimizer = make_optimizer("adam", model.params, lr)
    loader = BatchLoader(splits["train"], 50, seq_length)
    state, grads, losses = model.initial_state(50), model.zeros_like_params(), []
    for iteration in range(1, iters + 1):
        inputs, targets, reset = loader.next_batch()
        if reset:
            state[...] = 0.0
        for grad in grads.values():
            grad.fill(0.0)
        loss, state = model.loss_and_grads(inputs, targets, state, grads)
        clip_grad_value(grads, 5.0)
        optimizer.step(model.params, grads)
        if iteration % 100 == 0:
            losses.append(round(loss, 3))
    val = evaluate_loss(model, splits["val"], 50, 100)["loss_nats"]
    print(f"input std {input_std:<5} lr {lr:g} T {seq_length}: train {losses}  val {val:.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/data/tinyshakespeare/input.txt")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--lr", type=float, nargs="+", default=[2e-3])
    parser.add_argument("--seq-length", type=int, default=100)
    parser.add_argument("--input-std", type=float, nargs="+", default=[INIT_RANGE, 1.0])
    args = parser.parse_args()
    splits = split_corpus(load_corpus(args.corpus).ids)
    for lr in args.lr:
        for std in args.input_std:
            run(splits, args.hidden, std, lr, args.iters, args.seq_length)


if __name__ == "__main__":
    main()
