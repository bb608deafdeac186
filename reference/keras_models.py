"""Keras twins of the npmf models, built from an npmf configuration.

Each twin is the tutorial's Keras model with npmf's table sizes (dense ids
``0..n-1``, no unused row 0), embedding size, hidden widths, activation,
loss, whole-table L2 on the four embedding tables, and optimizer. The
layers are named like npmf's parameter keys, so tests compare key by key:

=============  ==========================  ===============================
npmf key       Keras variable              shape change
=============  ==========================  ===============================
``P``, ``Q``   layer ``P`` / ``Q``         none
               ``embeddings``
``bu``, ``bi`` layer ``bu`` / ``bi``       npmf ``(n,)`` <-> Keras
               ``embeddings``              ``(n, 1)``
``W1``, ``b1`` layer ``W1`` ``kernel``,    none (both store ``(in, out)``)
               ``bias``
=============  ==========================  ===============================

Every reshape between the two layouts happens in :func:`to_keras_weights`,
:func:`from_keras_weights` and :func:`grads_to_npmf`, nowhere else.

This module imports TensorFlow; :mod:`npmf` never imports it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from npmf.models import EMBEDDING_KEYS  # noqa: E402

# ---------------------------------------------------------------- losses


def RMSE(y_true, y_pred):  # noqa: N802 (the tutorial's name)
    """Return the tutorial's custom RMSE loss, verbatim.

    Parameters
    ----------
    y_true : Tensor
        Targets; shape ``(batch, 1)`` on the loss path, where Keras expands
        a 1-D target first.
    y_pred : Tensor of shape (batch, 1)
        Predictions.

    Returns
    -------
    Tensor
        Scalar ``sqrt(mean((y_true - y_pred) ** 2))``.

    Notes
    -----
    Used as a *metric* with a 1-D target, this function broadcasts
    ``(batch,) - (batch, 1)`` to ``(batch, batch)`` (``KERAS_SEMANTICS.md``
    section 3); see :mod:`reference.broadcast_demo`. The name is upper case
    because Keras derives the log key ``rmse`` from it.
    """
    return tf.sqrt(tf.reduce_mean(tf.square(y_true - y_pred)))


def _keras_loss(loss):
    if loss == "rmse":
        return RMSE
    if loss == "mse":
        return keras.losses.MeanSquaredError(name="mse")
    raise ValueError(f"loss must be 'rmse' or 'mse', got {loss!r}")


def _keras_optimizer(optimizer, learning_rate):
    if optimizer == "sgd":
        lr = 0.01 if learning_rate is None else learning_rate
        return keras.optimizers.SGD(learning_rate=lr)
    if optimizer == "adamax":
        lr = 0.001 if learning_rate is None else learning_rate
        return keras.optimizers.Adamax(learning_rate=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamax', got {optimizer!r}")


# ---------------------------------------------------------------- models


def _embeddings(n_users, n_items, n_factors, l2):
    """Build the two id inputs and the four named, regularised lookups."""
    reg = keras.regularizers.L2(l2) if l2 else None

    def table(n_rows, width, name):
        return keras.layers.Embedding(
            n_rows, width, embeddings_regularizer=reg, name=name
        )

    # inputs of shape (batch, 1), as in the tutorial
    user = keras.Input(shape=(1,), name="user")
    item = keras.Input(shape=(1,), name="item")

    # look up embeddings
    pu = table(n_users, n_factors, "P")(user)  # (batch, 1, k)
    qi = table(n_items, n_factors, "Q")(item)  # (batch, 1, k)
    bu_u = table(n_users, 1, "bu")(user)  # (batch, 1, 1)
    bi_i = table(n_items, 1, "bi")(item)  # (batch, 1, 1)
    return (user, item), (pu, qi, bu_u, bi_i)


def _compile(model, optimizer, learning_rate, loss, metrics):
    model.compile(
        optimizer=_keras_optimizer(optimizer, learning_rate),
        loss=_keras_loss(loss),
        metrics=metrics,
        jit_compile=False,
    )
    return model


def build_mf(
    n_users,
    n_items,
    n_factors,
    *,
    l2=0.01,
    loss="rmse",
    optimizer="sgd",
    learning_rate=None,
    metrics=None,
):
    """Build and compile the tutorial's matrix factorisation (Model A).

    Parameters
    ----------
    n_users : int
        Rows of ``P`` and ``bu``.
    n_items : int
        Rows of ``Q`` and ``bi``.
    n_factors : int
        Embedding size ``k``.
    l2 : float, default=0.01
        Whole-table L2 weight of each embedding table (0 for none).
    loss : {"rmse", "mse"}, default="rmse"
        Compiled loss: the tutorial's :func:`RMSE`, or Keras's MSE.
    optimizer : {"sgd", "adamax"}, default="sgd"
        Keras optimizer with default settings.
    learning_rate : float, optional
        Step size; Keras's default (SGD 0.01, Adamax 0.001) when None.
    metrics : list, optional
        Passed to ``compile``; the tutorial passes ``[RMSE]``.

    Returns
    -------
    keras.Model
        Inputs ``[user, item]``, output ``r_hat`` of shape ``(batch, 1)``.

    Notes
    -----
    ``r_hat = Flatten(Dot(axes=(2, 2))([P[u], Q[i]]) + bu[u] + bi[i])``.
    """
    inputs, (pu, qi, bu_u, bi_i) = _embeddings(n_users, n_items, n_factors, l2)

    # dot product plus biases
    dot = keras.layers.Dot(axes=(2, 2), name="dot")([pu, qi])  # (batch, 1, 1)
    total = keras.layers.Add(name="add")([dot, bu_u, bi_i])  # (batch, 1, 1)
    r_hat = keras.layers.Flatten(name="r_hat")(total)  # (batch, 1)

    model = keras.Model(inputs, r_hat, name="mf")
    return _compile(model, optimizer, learning_rate, loss, metrics)


def build_deep(
    n_users,
    n_items,
    n_factors,
    *,
    hidden=(2048, 256),
    activation="linear",
    l2=0.01,
    loss="rmse",
    optimizer="sgd",
    learning_rate=None,
    metrics=None,
):
    """Build and compile the tutorial's deep model (Model B).

    Parameters
    ----------
    n_users : int
        Rows of ``P`` and ``bu``.
    n_items : int
        Rows of ``Q`` and ``bi``.
    n_factors : int
        Embedding size ``k``.
    hidden : tuple of int, default=(2048, 256)
        Widths of the hidden Dense layers ``W1, W2, ...``.
    activation : str, default="linear"
        Keras activation after each hidden Dense layer.
    l2 : float, default=0.01
        Whole-table L2 weight of each embedding table; Dense layers get none.
    loss : {"rmse", "mse"}, default="rmse"
        Compiled loss.
    optimizer : {"sgd", "adamax"}, default="sgd"
        Keras optimizer with default settings.
    learning_rate : float, optional
        Step size; Keras's default when None.
    metrics : list, optional
        Passed to ``compile``.

    Returns
    -------
    keras.Model
        Inputs ``[user, item]``, output ``r_hat`` of shape ``(batch, 1)``.

    Notes
    -----
    ``x = [P[u], Q[i], bu[u], bi[i]]`` (width ``2k + 2``), then for each
    hidden layer ``z1 = x @ W1 + b1``, ``a1 = activation(z1)``, and finally
    ``r_hat = a_last @ W_out + b_out`` with no activation. The Dense layer
    holding ``W1`` and ``b1`` is named ``W1``; its activation layer ``a1``.
    """
    inputs, lookups = _embeddings(n_users, n_items, n_factors, l2)

    # concatenate the four lookups
    x = keras.layers.Concatenate(axis=-1, name="x_concat")(list(lookups))
    a = keras.layers.Flatten(name="x")(x)  # (batch, 2k + 2)

    # hidden layers: z = a W + b, a = activation(z)
    for n, width in enumerate(hidden, start=1):
        z = keras.layers.Dense(width, name=f"W{n}")(a)  # (batch, h)
        a = keras.layers.Activation(activation, name=f"a{n}")(z)  # (batch, h)

    # output layer
    r_hat = keras.layers.Dense(1, name=f"W{len(hidden) + 1}")(a)  # (batch, 1)

    model = keras.Model(inputs, r_hat, name="deep")
    return _compile(model, optimizer, learning_rate, loss, metrics)


# ---------------------------------------------------------------- weights


def _dense_names(model):
    return [layer.name for layer in model.layers if layer.name.startswith("W")]


def to_keras_weights(model, params):
    """Copy npmf parameters into a Keras twin, converting layouts once.

    Parameters
    ----------
    model : keras.Model
        Twin from :func:`build_mf` or :func:`build_deep`.
    params : dict of str to ndarray
        npmf parameters: ``P``, ``Q``, ``bu (n_users,)``, ``bi (n_items,)``
        and, for the deep model, ``W1, b1, ...``.

    Raises
    ------
    ValueError
        If a key is missing or a shape does not match the twin's.
    """
    for key in EMBEDDING_KEYS:
        var = model.get_layer(key).embeddings
        value = np.asarray(params[key], dtype=np.float32)
        if key in ("bu", "bi"):
            value = value[:, None]  # (n, 1)
        _assign(var, value, key)
    for name in _dense_names(model):
        n = name[1:]
        layer = model.get_layer(name)
        _assign(layer.kernel, np.asarray(params[f"W{n}"], np.float32), f"W{n}")
        _assign(layer.bias, np.asarray(params[f"b{n}"], np.float32), f"b{n}")


def _assign(var, value, key):
    if tuple(var.shape) != value.shape:
        raise ValueError(
            f"npmf parameter {key} has shape {value.shape}, the Keras twin "
            f"expects {tuple(var.shape)}"
        )
    var.assign(value)


def from_keras_weights(model):
    """Read a Keras twin's weights as npmf parameters.

    Parameters
    ----------
    model : keras.Model
        Twin from :func:`build_mf` or :func:`build_deep`.

    Returns
    -------
    params : dict of str to ndarray
        float32 arrays keyed and shaped like npmf's (``bu (n_users,)``).
    """
    params = {}
    for key in EMBEDDING_KEYS:
        value = np.array(model.get_layer(key).embeddings.numpy())
        params[key] = value[:, 0] if key in ("bu", "bi") else value  # (n,) / (n, k)
    for name in _dense_names(model):
        n = name[1:]
        layer = model.get_layer(name)
        params[f"W{n}"] = np.array(layer.kernel.numpy())  # (in, out)
        params[f"b{n}"] = np.array(layer.bias.numpy())  # (out,)
    return params


def grads_to_npmf(model, grads):
    """Key a list of Keras gradients like npmf and convert their layouts.

    Parameters
    ----------
    model : keras.Model
        The twin the gradients belong to.
    grads : list of Tensor
        Gradients in the order of ``model.trainable_variables``.

    Returns
    -------
    dict of str to ndarray
        float32 gradients keyed and shaped like npmf's parameters.
    """
    out = {}
    for var, g in zip(model.trainable_variables, grads):
        layer_name, var_name = var.path.split("/")[-2:]
        g = np.array(tf.convert_to_tensor(g).numpy())
        if layer_name in EMBEDDING_KEYS:
            out[layer_name] = g[:, 0] if layer_name in ("bu", "bi") else g
        else:
            letter = "W" if var_name == "kernel" else "b"
            out[f"{letter}{layer_name[1:]}"] = g
    return out


# ---------------------------------------------------------------- checks


def check_ids(u, i, n_users, n_items):
    """Refuse ids outside the tables before TensorFlow sees them.

    Parameters
    ----------
    u : array-like of shape (batch,)
        User indices.
    i : array-like of shape (batch,)
        Item indices.
    n_users : int
        Rows of the user tables.
    n_items : int
        Rows of the item tables.

    Returns
    -------
    u, i : ndarray of shape (batch,)
        The indices as int64.

    Raises
    ------
    ValueError
        Naming the first bad position, its id and the table size. Keras's
        ``ops.take`` would wrap a negative id to the end of the table, and
        an id past the end fails deep inside TensorFlow.
    """
    out = []
    for name, idx, n_rows in (("u", u, n_users), ("i", i, n_items)):
        idx = np.asarray(idx)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ValueError(
                f"{name} must be a 1-D integer array, got shape {idx.shape} "
                f"and dtype {idx.dtype}"
            )
        bad = np.flatnonzero((idx < 0) | (idx >= n_rows))
        if bad.size:
            raise ValueError(
                f"{name}[{bad[0]}] = {idx[bad[0]]} is outside the table of "
                f"{n_rows} rows; ids must be in [0, {n_rows})"
            )
        out.append(idx.astype(np.int64))
    return tuple(out)


def _table_sizes(model):
    return model.get_layer("P").input_dim, model.get_layer("Q").input_dim


# ---------------------------------------------------------------- gradients


def keras_gradients(model, params, u, i, r):
    """Load npmf weights into a twin and return its gradients for a batch.

    Parameters
    ----------
    model : keras.Model
        Compiled twin.
    params : dict of str to ndarray
        npmf parameters to load first.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    r : ndarray of shape (batch,)
        Centred targets.

    Returns
    -------
    loss : float
        Compiled total loss ``loss(r, r_hat) + sum(model.losses)``, what
        ``fit`` differentiates.
    grads : dict of str to ndarray
        Its gradient, keyed and shaped like ``params``.

    Raises
    ------
    ValueError
        If an id is outside the tables (checked before TensorFlow runs).
    """
    u, i = check_ids(u, i, *_table_sizes(model))
    to_keras_weights(model, params)
    r = np.asarray(r, dtype=np.float32)  # (batch,)

    # total loss on the tape, exactly as the train step computes it
    with tf.GradientTape() as tape:
        r_hat = model([u, i], training=True)  # (batch, 1)
        total = model.compute_loss(x=[u, i], y=r, y_pred=r_hat)
    grads = tape.gradient(total, model.trainable_variables)
    return float(total), grads_to_npmf(model, grads)


def mf_gradients(params, u, i, r, *, l2=0.01, loss="rmse"):
    """Gradients of Keras Model A at npmf's MF weights, keyed like npmf.

    Parameters
    ----------
    params : dict of str to ndarray
        ``P (n_users, k)``, ``Q (n_items, k)``, ``bu (n_users,)``,
        ``bi (n_items,)``.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    r : ndarray of shape (batch,)
        Centred targets.
    l2 : float, default=0.01
        Whole-table L2 weight.
    loss : {"rmse", "mse"}, default="rmse"
        Loss.

    Returns
    -------
    loss : float
        Total loss including the penalty.
    grads : dict of str to ndarray
        float32 gradients keyed like ``params``.
    """
    n_users, k = params["P"].shape
    check_ids(u, i, n_users, params["Q"].shape[0])
    model = build_mf(n_users, params["Q"].shape[0], k, l2=l2, loss=loss)
    return keras_gradients(model, params, u, i, r)


def deep_hidden(params):
    """Hidden widths of npmf deep parameters (``W1 .. W_last``).

    Parameters
    ----------
    params : dict of str to ndarray
        Deep-model parameters.

    Returns
    -------
    tuple of int
        Output width of every Dense layer but the last.
    """
    n_dense = sum(1 for key in params if key.startswith("W"))
    return tuple(params[f"W{n}"].shape[1] for n in range(1, n_dense))


def deep_gradients(params, u, i, r, *, activation="linear", l2=0.01, loss="rmse"):
    """Gradients of Keras Model B at npmf's deep weights, keyed like npmf.

    Parameters
    ----------
    params : dict of str to ndarray
        ``P``, ``Q``, ``bu``, ``bi``, ``W1, b1, ..., W3, b3``.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    r : ndarray of shape (batch,)
        Centred targets.
    activation : str, default="linear"
        Hidden activation.
    l2 : float, default=0.01
        Whole-table L2 weight on the embeddings.
    loss : {"rmse", "mse"}, default="rmse"
        Loss.

    Returns
    -------
    loss : float
        Total loss including the penalty.
    grads : dict of str to ndarray
        float32 gradients keyed like ``params``.
    """
    n_users, k = params["P"].shape
    n_items = params["Q"].shape[0]
    check_ids(u, i, n_users, n_items)
    model = build_deep(
        n_users,
        n_items,
        k,
        hidden=deep_hidden(params),
        activation=activation,
        l2=l2,
        loss=loss,
    )
    return keras_gradients(model, params, u, i, r)


# ---------------------------------------------------------------- training


def fit_keras(model, u, i, r, *, batch_size, n_steps=None):
    """Run ``n_steps`` training steps (default one epoch) in array order.

    Parameters
    ----------
    model : keras.Model
        Compiled twin, weights already loaded; its optimizer state carries
        over between calls, like Keras's own epochs.
    u : ndarray of shape (n,)
        User indices, already permuted.
    i : ndarray of shape (n,)
        Item indices, already permuted.
    r : ndarray of shape (n,)
        Centred targets, already permuted.
    batch_size : int
        Batch size; the last partial batch is kept.
    n_steps : int, optional
        Steps to run, on the first ``n_steps * batch_size`` samples; all
        ``ceil(n / batch_size)`` when None.

    Returns
    -------
    float
        Keras's logged epoch ``loss`` (batch-size-weighted mean of loss plus
        penalty at the pre-step weights).

    Notes
    -----
    ``fit(shuffle=False, epochs=1)`` on pre-permuted arrays is the
    ``KERAS_SEMANTICS.md`` section 7 recipe: NumPy cannot reproduce Keras's
    shuffle, but it can hand both sides the same order.
    """
    u, i = check_ids(u, i, *_table_sizes(model))
    n = len(u) if n_steps is None else min(len(u), n_steps * batch_size)
    r = np.asarray(r, dtype=np.float32)
    history = model.fit(
        [u[:n], i[:n]],
        r[:n],
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return float(history.history["loss"][0])
