"""The one place that knows the .tflite flatbuffer: schema, reader, verifier, writer, rewrites, metadata."""
