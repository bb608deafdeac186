"""Tests for npmf.layers: dense layer, glorot init and activations."""

import warnings

import numpy as np
import pytest

from npmf.layers import (
    ACTIVATIONS,
    dense_backward,
    dense_forward,
    embedding_backward,
    glorot_uniform,
)

# a_in (batch 2, in 2), W (in 2, out 3), b (out 3), used by the dense tests
A_IN = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float32)
W = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]], dtype=np.float32)
B = np.array([0.5, -1.0, 0.0], dtype=np.float32)


def test_dense_forward_hand_example():
    """z = a_in @ W + b on a 2x2 input and a 2x3 kernel, worked by hand."""
    z = dense_forward(A_IN, W, B)

    # row 1: [1*1 + 2*2 + 0.5, 1*0 + 2*1 - 1, 1*-1 + 2*0 + 0] = [5.5, 1, -1]
    # row 2: [3*1 - 1*2 + 0.5, 3*0 - 1*1 - 1, 3*-1 - 1*0 + 0] = [1.5, -2, -3]
    expected = np.array([[5.5, 1.0, -1.0], [1.5, -2.0, -3.0]], dtype=np.float32)
    np.testing.assert_array_equal(z, expected)
    assert z.dtype == np.float32


def test_dense_backward_hand_example():
    """dW = a_in.T dz, db = sum_b dz, da_in = dz W.T, worked by hand."""
    dz = np.array([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0]], dtype=np.float32)

    da_in, dW, db = dense_backward(dz, A_IN, W)

    # dW[j, o] = sum_b a_in[b, j] dz[b, o]
    #   j=0: [1*1 + 3*-1, 1*0 + 3*1, 1*2 + 3*0] = [-2, 3, 2]
    #   j=1: [2*1 - 1*-1, 2*0 - 1*1, 2*2 - 1*0] = [3, -1, 4]
    np.testing.assert_array_equal(dW, [[-2.0, 3.0, 2.0], [3.0, -1.0, 4.0]])
    # db = column sums of dz = [1 - 1, 0 + 1, 2 + 0]
    np.testing.assert_array_equal(db, [0.0, 1.0, 2.0])
    # da_in[b, j] = sum_o dz[b, o] W[j, o]
    #   b=0: [1*1 + 0*0 + 2*-1, 1*2 + 0*1 + 2*0] = [-1, 2]
    #   b=1: [-1*1 + 1*0 + 0*-1, -1*2 + 1*1 + 0*0] = [-1, -1]
    np.testing.assert_array_equal(da_in, [[-1.0, 2.0], [-1.0, -1.0]])
    assert (da_in.shape, dW.shape, db.shape) == (A_IN.shape, W.shape, B.shape)


def test_dense_forward_leaves_bias_and_input_unchanged():
    """The in-place bias add touches only the fresh matmul result."""
    a_in, W_copy, b = A_IN.copy(), W.copy(), B.copy()
    dense_forward(a_in, W_copy, b)
    np.testing.assert_array_equal(a_in, A_IN)
    np.testing.assert_array_equal(W_copy, W)
    np.testing.assert_array_equal(b, B)


def test_glorot_uniform_bounds_shape_dtype():
    """Kernels are float32 (in, out), inside +-sqrt(6 / (in + out))."""
    rng = np.random.default_rng(0)

    W = glorot_uniform(402, 2048, rng)

    # L = sqrt(6 / 2450) = 0.049487 (KERAS_SEMANTICS.md section 1)
    limit = np.sqrt(6.0 / (402 + 2048))
    assert limit == pytest.approx(0.049487, abs=1e-6)
    assert W.shape == (402, 2048) and W.dtype == np.float32
    assert np.abs(W).max() <= limit
    # 823k draws fill the interval, and the variance is L^2 / 3
    assert np.abs(W).max() > 0.999 * limit
    assert W.var() == pytest.approx(limit**2 / 3, rel=0.01)


def test_glorot_uniform_draws_through_rng_uniform():
    """Init draws only via rng.uniform(low, high, size), as io's fake rng needs."""

    class Recorder:
        calls = []

        def uniform(self, low, high, size):
            self.calls.append((low, high, size))
            return np.zeros(size)

    W = glorot_uniform(3, 5, Recorder())

    limit = np.sqrt(6.0 / 8)
    assert Recorder.calls == [(-limit, limit, (3, 5))]
    assert W.shape == (3, 5) and W.dtype == np.float32


# z has nice values: sigmoid(+-ln 3) = 0.75 / 0.25, tanh(ln 2) = 0.6,
# tanh(ln 3) = 0.8 (tanh(x) = (e^2x - 1) / (e^2x + 1): 3/5 and 8/10)
LN2, LN3 = np.log(2.0), np.log(3.0)
ACTIVATION_CASES = {
    # name: (z, a, d a / d z)
    "linear": ([-2.0, 0.0, 0.5, 3.0], [-2.0, 0.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]),
    "relu": ([-2.0, 0.0, 0.5, 3.0], [0.0, 0.0, 0.5, 3.0], [0.0, 0.0, 1.0, 1.0]),
    # sigmoid' = a (1 - a): 0.25 * 0.75 = 0.1875, 0.5 * 0.5 = 0.25
    "sigmoid": ([-LN3, 0.0, LN3], [0.25, 0.5, 0.75], [0.1875, 0.25, 0.1875]),
    # tanh' = 1 - a^2: 1 - 0.36 = 0.64, 1 - 0.64 = 0.36
    "tanh": ([-LN2, 0.0, LN3], [-0.6, 0.0, 0.8], [0.64, 1.0, 0.36]),
}


@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_activation_hand_example(name):
    """Each activation and its derivative give the hand-worked values."""
    z, a_expected, slope = np.array(ACTIVATION_CASES[name], dtype=np.float32)
    act = ACTIVATIONS[name]

    a = act.forward(z)
    # da = 2 everywhere, so dz = 2 * slope
    dz = act.backward(np.full_like(z, 2.0), a)

    np.testing.assert_allclose(a, a_expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dz, 2.0 * slope, rtol=1e-6, atol=1e-7)
    assert a.dtype == np.float32 and dz.dtype == np.float32
    assert act.name == name


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_central_difference(name):
    """backward(da, a) equals da * (f(z + h) - f(z - h)) / 2h in float64."""
    rng = np.random.default_rng(1)
    z = rng.normal(scale=2.0, size=(3, 5))
    z[np.abs(z) < 1e-3] = 0.5  # keep relu's kink out of reach of h
    da = rng.normal(size=(3, 5))
    act, h = ACTIVATIONS[name], 1e-6

    numeric = da * (act.forward(z + h) - act.forward(z - h)) / (2 * h)

    analytic = act.backward(da, act.forward(z))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)


def test_activations_registry_names():
    """ACTIVATIONS holds exactly the four Keras names the CLI offers."""
    assert set(ACTIVATIONS) == {"linear", "relu", "sigmoid", "tanh"}


def test_sigmoid_saturates_without_overflow():
    """sigmoid(+-1000) is 1 / 0 in float32 with no overflow warning."""
    z = np.array([-1000.0, 1000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = ACTIVATIONS["sigmoid"].forward(z)
    np.testing.assert_array_equal(a, [0.0, 1.0])


def test_linear_passes_arrays_through_without_copy():
    """The identity activation returns its input arrays, no copies."""
    z = np.ones((2, 3), dtype=np.float32)
    act = ACTIVATIONS["linear"]
    assert act.forward(z) is z
    assert act.backward(z, z) is z


def test_embedding_grad_accumulates_repeated_ids():
    """Rows looked up twice get the sum of both gradients; unused rows 0."""
    dout = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]], dtype=np.float32)
    idx = np.array([2, 0, 2])

    dtable = embedding_backward(dout, idx, n_rows=4)

    # row 2 = [1 + 100, 2 + 200]; row 0 = [10, 20]; rows 1, 3 unused
    np.testing.assert_array_equal(dtable, [[10, 20], [0, 0], [101, 202], [0, 0]])
