"""Authoring models: `Module` and its typed state (module.py), layers (nn/), losses, optimizers
and schedules (losses.py, optim.py), and conversion of a Module's signatures into one Program
and one .tflite file (convert.py)."""
