r"""Checkpoints written before ``model.query_mode`` existed: their
asymmetric models had a separate query head, and every loader must rebuild
exactly that (the residual head has other parameter names, so a silent
mix-up cannot happen, but a refusal would strand old runs)."""
import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.inference.embed import build_model
from pinsage_pyg.inference.spark.job import load_model
from pinsage_pyg.nn import PinSage
from pinsage_pyg.training.checkpointing import check_resume
from pinsage_pyg.training.module import PinSageModule

OLD = dict(in_channels=5, hidden_channels=8, out_channels=4, num_layers=2,
           aggr='importance', asymmetric=True)


def old_checkpoint():
    torch.manual_seed(0)
    model = PinSage(**OLD, query_mode='separate')
    return model, {'model.' + k: v for k, v in model.state_dict().items()}


def same(a, b):
    x = torch.randn(4, 5)
    ei = torch.tensor([[1, 2, 3], [0, 0, 1]])
    for u, v in zip(a.inference(x, ei), b.inference(x, ei)):
        assert torch.equal(u, v)


def test_embed_and_spark_load_a_checkpoint_without_query_mode(tmp_path):
    model, state = old_checkpoint()
    weights = {k[len('model.'):]: v for k, v in state.items()}
    loaded = build_model(dict(OLD), weights, 5)
    assert loaded.query_mode == 'separate'
    same(loaded, model)
    torch.save({'state_dict': state,
                'hyper_parameters': {'model': dict(OLD)}},
               tmp_path / 'old.ckpt')
    spark_model = load_model(tmp_path / 'old.ckpt')
    assert spark_model.query_mode == 'separate'
    same(spark_model, model)
    # The weights of a separate head in a residual model: refused, named.
    with pytest.raises(ConfigError, match='query_'):
        build_model(dict(OLD, query_mode='residual'), weights, 5)


def test_module_and_resume_check_treat_old_asymmetric_as_separate():
    model, state = old_checkpoint()
    module = PinSageModule(model=dict(OLD), loss={'name': 'max_margin'},
                           optimizer={'lr': 1e-3})
    module.load_state_dict(state)
    same(module.model, model)
    ckpt = {'hyper_parameters': {'model': dict(OLD)}}
    check_resume(ckpt, 'old.ckpt', dict(OLD, query_mode='separate'), {})
    with pytest.raises(ConfigError, match="query_mode: checkpoint "
                                          "'separate', this run 'residual'"):
        check_resume(ckpt, 'old.ckpt', dict(OLD, query_mode='residual'), {})
