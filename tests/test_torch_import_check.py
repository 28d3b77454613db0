"""The coverage report (`check_import`, `litetrain import-check model.pt2`) and the importer's refusals:
every aten op of a model listed as supported or not with the modules that call it, before anything is
converted; refusals name the op, the torch module and what to do; a saved .pt2 program imports."""
import json

import numpy as np
import pytest

import litetrain as lt

torch = pytest.importorskip("torch", reason="PyTorch is the importer's source and the reference")
nn = torch.nn

from litetrain.cli import main  # noqa: E402
from litetrain.importers import TorchImportError, from_torch  # noqa: E402
from litetrain.importers.torch import check_import  # noqa: E402


class Cumsum(nn.Module):
    def forward(self, x):
        return x.cumsum(-1)


class Mixed(nn.Module):
    """Supported layers around two unsupported ops (cumsum in a submodule, topk at the top level)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ELU())
        self.running = Cumsum()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.running(self.encoder(x))).topk(2, -1).values


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Mish(), nn.Linear(8, 8), nn.Mish())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_check_import_lists_every_op_with_its_modules():
    report = check_import(Good(), torch.zeros(2, 4))
    assert report.supported and not report.unsupported
    ops = {u.op: u for u in report.ops}
    assert ops["aten.linear.default"].count == 3
    assert ops["aten.mish.default"].modules == ["encoder.2 (Mish)", "encoder.4 (Mish)"]
    assert "aten.layer_norm.default" in ops
    text = report.format()
    assert "all supported" in text and "aten.linear.default" in text
    assert json.loads(json.dumps(report.to_dict()))["supported"] is True


def test_unsupported_ops_are_listed_with_their_modules_and_what_to_do():
    report = check_import(Mixed(), torch.zeros(2, 4))
    assert not report.supported
    bad = {u.op: u for u in report.unsupported}
    assert set(bad) == {"aten.cumsum.default", "aten.topk.default"}
    assert bad["aten.cumsum.default"].modules == ["running (Cumsum)"]
    assert bad["aten.topk.default"].modules == ["<top level> (Mixed)"]
    good = [u.op for u in report.ops if u.supported]
    assert "aten.linear.default" in good and "aten.elu.default" in good
    text = report.format()
    assert "2 unsupported" in text and "NO   aten.cumsum.default" in text
    assert "triangular" in text and "outside the model" in text  # what to do, per op


def test_from_torch_refuses_naming_the_op_the_module_and_what_to_do():
    with pytest.raises(TorchImportError, match=r"aten\.cumsum\.default \(called in running \(Cumsum\)\): write it as "
                                               r"a matmul.*also unsupported: \['aten\.topk\.default'\]"):
        from_torch(Mixed(), torch.zeros(2, 4))


def test_refusals_of_layers_and_inputs():
    with pytest.raises(TorchImportError, match=r"aten\.lstm\.input in rnn \(LSTM\).*proj_size.*nn\.Linear"):
        class Projected(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.LSTM(4, 6, proj_size=3, batch_first=True)

            def forward(self, x):
                return self.rnn(x)[0]
        net = from_torch(Projected(), torch.zeros(2, 5, 4))
        lt.trace_program(_wrap(net, [5, 4]), ["f"])
    with pytest.raises(TypeError, match="float32, int64, int32 or bool, got torch.float64"):
        from_torch(Good(), torch.zeros(2, 4, dtype=torch.float64))

    class Masked(nn.Module):
        def forward(self, x):
            return x[x > 0].sum()
    with pytest.raises(TorchImportError, match=r"(nonzero|index).*torch\.where"):
        lt.trace_program(_wrap(from_torch(Masked(), torch.ones(2, 4)), [4]), ["f"])
    net = from_torch(Good(), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"input is float32 in the torch model, got int32"):
        lt.trace_program(_wrap(net, [4], "int32"), ["f"])


def _wrap(net, shape, dtype="float32"):
    class M(lt.Module):
        def __init__(self):
            self.net = net

        @lt.signature(x=lt.TensorSpec([None, *shape], dtype))
        def f(self, x):
            out = self.net(x)
            return {"y": out[0] if isinstance(out, tuple) else out}
    return M()


def _saved(tmp_path, model, *inputs):
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model.eval(), inputs), str(path))
    return path


def test_the_command_reports_a_saved_program(tmp_path, capsys):
    good = _saved(tmp_path, Good(), torch.zeros(2, 4))
    assert main(["import-check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "all supported" in out and "ok   aten.linear.default" in out and "encoder.0 (Linear)" in out
    assert main(["import-check", "--json", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["supported"] is True

    bad = _saved(tmp_path, Mixed(), torch.zeros(2, 4))
    assert main(["import-check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "NO   aten.topk.default" in out and "running (Cumsum)" in out

    assert main(["import-check", str(tmp_path / "missing.pt2")]) == 2
    assert "cannot read" in capsys.readouterr().err
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a program")
    assert main(["import-check", str(junk)]) == 2
    assert "torch.export.save" in capsys.readouterr().err


def test_a_saved_program_imports_and_runs_on_another_batch(tmp_path):
    torch.manual_seed(0)
    model = Good()
    loaded = torch.export.load(str(_saved(tmp_path, model, torch.zeros(2, 4))))
    net = from_torch(loaded, trainable="all")
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    interp = lt.Interpreter.from_program(lt.trace_program(_wrap(net, [4]), ["f"]))
    with torch.no_grad():
        np.testing.assert_allclose(interp.get_signature_runner("f")(x=x)["y"], model(torch.from_numpy(x)).numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert len(net.trainable_variables) == len(list(model.parameters()))
