"""The TensorFlow side: the Keras builder, weights, calibration and training."""
