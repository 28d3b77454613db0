"""Running a Program: plans, the executor and the variable store (executor.py), and the
`Interpreter` with tf.lite.Interpreter's Python API (interpreter.py)."""
from .executor import ExecutionError, Executor, LoopLimitError, MemoryBudgetError, NonFiniteError, VariableStore
from .interpreter import Interpreter, SignatureError, SignatureRunner

__all__ = ["ExecutionError", "Executor", "LoopLimitError", "MemoryBudgetError", "NonFiniteError", "VariableStore",
           "Interpreter", "SignatureError", "SignatureRunner"]
