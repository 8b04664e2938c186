"""sampled_softmax_loss and nce_loss against TensorFlow, values and GradientTape gradients (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import refsoftmax as rs

tf = pytest.importorskip("tensorflow")

C, D, B, S = 11, 5, 6, 7


def _tf_loss_and_grads(fn, w, b, y, x, sv, num_true, remove):
    tw, tb, tx = (tf.Variable(a) for a in (w, b, x))
    with tf.GradientTape() as tape:
        loss = fn(weights=tw, biases=tb, labels=tf.constant(y, tf.int64), inputs=tx,
                  num_sampled=S, num_classes=C, num_true=num_true,
                  sampled_values=tuple(tf.constant(a) for a in sv),
                  remove_accidental_hits=remove)
        total = tf.reduce_sum(loss * tf.constant(np.linspace(0.5, 1.5, B)))
    gw, gb, gx = tape.gradient(total, [tw, tb, tx])
    return loss.numpy(), tf.convert_to_tensor(gw).numpy(), tf.convert_to_tensor(gb).numpy(), gx.numpy()


@pytest.mark.parametrize("name", ["sampled_softmax_loss", "nce_loss"])
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("remove", [True, False])
def test_against_tensorflow(name, num_true, remove):
    rng = np.random.default_rng(7 + num_true)
    w = rng.standard_normal((C, D))
    b = rng.standard_normal(C)
    x = rng.standard_normal((B, D))
    y = rng.integers(0, C, (B, num_true))
    cand = rng.choice(C, S, replace=False).astype(np.int64)
    cand[0] = y[0, 0]  # an accidental hit
    y[2, -1] = cand[3]
    sv = (cand, rng.uniform(0.1, 2.0, (B, num_true)), rng.uniform(0.1, 2.0, S))
    ours_fn = getattr(rs, name)
    ct = np.linspace(0.5, 1.5, B)
    value, grads = ours_fn.value_and_grad(w, b, y, x, S, C, num_true, sv, remove_accidental_hits=remove,
                                          cotangent=ct)
    tf_value, gw, gb, gx = _tf_loss_and_grads(getattr(tf.nn, name), w, b, y, x, sv, num_true, remove)
    np.testing.assert_allclose(value, tf_value, rtol=1e-12)
    np.testing.assert_allclose(grads["inputs"], gx, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["weights"].to_dense(), gw, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["biases"].to_dense(), gb, rtol=1e-10, atol=1e-13)


def test_tensorflow_sampler_output_drives_refsoftmax():
    """A TF sampler's triple is accepted as sampled_values unchanged."""
    y = np.array([[1], [4], [9], [2], [0], [3]], dtype=np.int64)
    sv = tf.random.log_uniform_candidate_sampler(y, 1, S, True, C, seed=3)
    rng = np.random.default_rng(0)
    w, b, x = rng.standard_normal((C, D)), rng.standard_normal(C), rng.standard_normal((B, D))
    sv_np = tuple(a.numpy() for a in sv)
    ours = rs.sampled_softmax_loss(w, b, y, x, S, C, 1, sv_np)
    theirs = tf.nn.sampled_softmax_loss(w, b, y, x, S, C, 1,
                                        sampled_values=(sv[0], tf.cast(sv[1], tf.float64), tf.cast(sv[2], tf.float64)))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6)
