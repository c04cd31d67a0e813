"""Float64 numpy references for the loss tests, written straight from the formulas (no tricks)."""

import numpy as np

LOG_FLOOR = 1e-10


def log_softmax(logits):
    x = np.asarray(logits, np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def softmax(logits):
    return np.exp(log_softmax(logits))


def one_hot(labels, vocab):
    return np.eye(vocab, dtype=np.float64)[np.asarray(labels)]


def gift_target(ref_logits, labels, beta, smooth_lambda=0.0):
    """q = softmax(log((1 - lam) p_ref + lam / V + 1e-10) + beta [k == y]), as the official code."""
    vocab = np.shape(ref_logits)[-1]
    smoothed = (1.0 - smooth_lambda) * softmax(ref_logits) + smooth_lambda / vocab
    target_logits = np.log(smoothed + LOG_FLOOR) + beta * one_hot(labels, vocab)
    return softmax(target_logits)


def gift_loss(logits, ref_logits, labels, beta, smooth_lambda=0.0):
    q = gift_target(ref_logits, labels, beta, smooth_lambda)
    return -(q * log_softmax(logits)).sum(-1)


def label_log_prob(logits, labels):
    return np.take_along_axis(log_softmax(logits), np.asarray(labels)[..., None], -1)[..., 0]


def entropy(logits):
    return -(softmax(logits) * log_softmax(logits)).sum(-1)


def kl(logits, ref_logits):
    return (softmax(logits) * (log_softmax(logits) - log_softmax(ref_logits))).sum(-1)
