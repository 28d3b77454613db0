"""Federated learning with the exact .tflite file a device would train: the client file
(`model.federated_file`: FedProx's proximal term with mu a run-time input), a client's local
training without any framework (`client.LocalTrainer`), Dirichlet partitions (`data`), and Flower:
a NumPyClient and Flower's own strategies (`flower`, which imports flwr) and a simulation on
Flower's simulation engine (`simulation.run_federated`, `litetrain federate`).

Flower is optional: `pip install "litetrain[federated]"`. Nothing here imports it until a Flower
object or a simulation is asked for."""
