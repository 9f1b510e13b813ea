"""One Keras builder for every spec, walking the same block list as the cost model.

Layer names follow keras.applications (``stem_conv``, ``block2a_expand_conv``, ``top_conv``,
``predictions``) so official weights load by name and reports read naturally. Every
convolution uses TF "same" padding, which is computed from the *actual* input size: the
asymmetric stride-2 padding of the original TF implementation is reproduced at any resolution,
and the converter emits no separate PAD ops.
"""

from __future__ import annotations

import math

from edgeeff.core.arch import Architecture, Block, ModelSpec, expand

# keras.applications' initialisers: variance scaling for convolutions, uniform for the classifier.
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
DENSE_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99


def _normalization(arch: Architecture):
    from keras import layers

    fam = arch.family
    scale = [1.0 / (255.0 * s) for s in fam.std]
    offset = [-m / s for m, s in zip(fam.mean, fam.std)]
    if len(set(scale)) == 1 and len(set(offset)) == 1:  # a scalar affine map (lite)
        scale, offset = scale[0], offset[0]
    return layers.Rescaling(scale=scale, offset=offset, name="normalization")


def _act(name: str, activation: str):
    from keras import layers

    return layers.Activation(activation, name=name)


def _bn(name: str):
    from keras import layers

    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _block(x, b: Block, activation: str, training_dropout: bool):
    from keras import layers

    p = b.name + "_"
    inp = x
    if b.expand_ratio != 1:
        x = layers.Conv2D(b.expanded, 1, padding="same", use_bias=False,
                          kernel_initializer=CONV_INIT, name=p + "expand_conv")(x)
        x = _bn(p + "expand_bn")(x)
        x = _act(p + "expand_activation", activation)(x)
    x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                               depthwise_initializer=CONV_INIT, name=p + "dwconv")(x)
    x = _bn(p + "bn")(x)
    x = _act(p + "activation", activation)(x)
    if b.se_filters:
        s = layers.GlobalAveragePooling2D(keepdims=True, name=p + "se_squeeze")(x)
        s = layers.Conv2D(b.se_filters, 1, padding="same", activation=activation,
                          kernel_initializer=CONV_INIT, name=p + "se_reduce")(s)
        s = layers.Conv2D(b.expanded, 1, padding="same", activation="sigmoid",
                          kernel_initializer=CONV_INIT, name=p + "se_expand")(s)
        x = layers.Multiply(name=p + "se_excite")([x, s])
    x = layers.Conv2D(b.filters_out, 1, padding="same", use_bias=False,
                      kernel_initializer=CONV_INIT, name=p + "project_conv")(x)
    x = _bn(p + "project_bn")(x)
    if b.residual:
        if training_dropout and b.drop_rate > 0:
            # stochastic depth: drops the whole residual branch per sample (identity at inference)
            x = layers.Dropout(b.drop_rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
        x = layers.Add(name=p + "add")([x, inp])
    return x


def build_model(spec: ModelSpec, include_preprocessing: bool = True, include_top: bool = True,
                classifier_activation: str | None = "softmax", training_dropout: bool = True):
    """The Keras model of ``spec``.

    ``include_preprocessing``: the model takes raw 0..255 RGB and normalises inside (the
    default). Without it the model takes normalised input; the int8 exporter uses that form and
    folds the normalisation into the uint8 input's quantisation parameters where it can.
    """
    import keras
    from keras import layers

    arch = expand(spec)
    act = arch.activation
    r = spec.resolution
    inputs = keras.Input(shape=(r, r, 3), name="image")
    x = _normalization(arch)(inputs) if include_preprocessing else inputs
    x = layers.Conv2D(arch.stem_filters, 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=CONV_INIT, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _act("stem_activation", act)(x)
    for b in arch.blocks:
        x = _block(x, b, act, training_dropout)
    x = layers.Conv2D(arch.top_filters, 1, padding="same", use_bias=False,
                      kernel_initializer=CONV_INIT, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = _act("top_activation", act)(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if training_dropout and spec.dropout > 0:
            x = layers.Dropout(spec.dropout, name="top_dropout")(x)
        x = layers.Dense(spec.num_classes, activation=classifier_activation,
                         kernel_initializer=DENSE_INIT, name="predictions")(x)
    name = spec.name.replace("+", "p").replace("-", "_").replace(".", "_")
    return keras.Model(inputs, x, name=name)


def trainable_params(model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def macs_from_keras(model) -> int:
    """Multiply-adds of conv, depthwise and dense layers, read off the built Keras graph."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * c
        elif isinstance(layer, layers.Conv2D):
            _, h, w, co = layer.output.shape
            kh, kw = layer.kernel_size
            ci = layer.input.shape[-1]
            total += h * w * kh * kw * ci * co
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
