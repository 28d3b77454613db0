"""litetrain: on-device training for Python. Author a model once, convert it to one .tflite file
with train/infer/save/restore signatures, and run any of them with NumPy only."""
from . import heads, importers, losses, nn, ops, optim
from .autodiff import gradients
from .checkpoint import CheckpointError
from .convert import convert, trace_program
from .interpreter import Interpreter, SignatureError, SignatureRunner
from .make_trainable import MakeTrainableError, make_trainable
from .module import Buffer, Module, Param, TensorSpec, signature
from .personalize import BaseModel, PersonalizeError, Preprocessing, convert_personalization
from .personalizer import Personalizer
from .runtime import ExecutionError, NonFiniteError
from .tflite import InvalidModelError, UnsupportedOpError
from .trace import TraceError

__version__ = "0.1.0"

__all__ = ["Buffer", "CheckpointError", "ExecutionError", "Interpreter", "InvalidModelError", "Module",
           "NonFiniteError", "Param", "SignatureError", "importers", "UnsupportedOpError", "SignatureRunner", "TensorSpec", "TraceError", "convert", "gradients",
           "losses", "nn", "ops", "optim", "heads", "BaseModel", "Personalizer", "PersonalizeError",
           "Preprocessing", "convert_personalization", "signature", "trace_program", "make_trainable", "MakeTrainableError"]
