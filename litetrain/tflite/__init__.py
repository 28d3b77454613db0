"""Reading and writing TensorFlow Lite FlatBuffers files (.tflite) as litetrain Programs."""
from .reader import InvalidModelError, UnsupportedOpError, read_model
from .writer import write_model

__all__ = ["InvalidModelError", "UnsupportedOpError", "read_model", "write_model"]
