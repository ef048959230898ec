r"""Unknown or misspelt config keys are refused with the closest valid key
named, whether appended with ``+`` or not, in all three CLIs; the valid
keys come from the packaged YAML files (every option of every group)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pinsage_pyg import config as config_mod
from pinsage_pyg.config import (ConfigError, check_config, check_keys,
                                check_override_keys, config_schema)

BIN = Path(sys.executable).parent


@pytest.fixture(scope='module')
def compose():
    from hydra import compose as hydra_compose, initialize_config_module

    def _compose(app, overrides=()):
        with initialize_config_module(config_module='pinsage_pyg.configs',
                                      version_base='1.3'):
            return hydra_compose(app, overrides=list(overrides))
    return _compose


@pytest.mark.parametrize('override, suggestion', [
    ('+data.batchsize=16', 'data.batch_size'),
    ('+model.hidden_chanels=8', 'model.hidden_channels'),
    ('+sampler.num_walk=3', 'sampler.num_walks'),
    ('+loss.temprature=0.1', 'loss.temperature'),
    ('+optimizer.learning_rate=0.1', None),
    ('+data.hidden_channels=8', 'model.hidden_channels'),
    ('+optimizer.xyz=0.1', None),
    ('+trainer.max_epoch=2', 'trainer.max_epochs'),
    ('+trainer.gradient_clip_vall=1', 'trainer.gradient_clip_val'),
    ('+evaluate.transition.deca=0.5', 'evaluate.transition.decay'),
    ('+curriculum.hard_negatives.band_strat=0.1',
     'curriculum.hard_negatives.band_start'),
])
def test_composed_train_config_refuses_unknown_keys(compose, override,
                                                    suggestion):
    cfg = compose('train', [override])
    path = override[1:].split('=')[0]
    with pytest.raises(ConfigError, match=f"unknown key '{path}'") as e:
        check_config(cfg)
    if suggestion is not None:
        assert f"did you mean '{suggestion}'?" in str(e.value)
    else:  # nothing close: the valid keys of that level are listed
        assert "valid keys under 'optimizer'" in str(e.value)
        assert "'lr'" in str(e.value)


@pytest.mark.parametrize('override', [
    'data=files', 'data=movielens_1m', 'loss=max_margin',
    'curriculum=paper', 'experiment=ablation/pinsage', 'trainer=ddp_cpu',
    # Keys of other group options than the selected one, Lightning Trainer
    # arguments, the scorers' keyword arguments:
    '+trainer.max_time=00:00:01:00', '+trainer.gradient_clip_val=1.0',
    '+evaluate.transition.decay=0.5', 'curriculum.stages.0.margin=0.2',
    'data.positives.window=2', 'sampler.window=2',
])
def test_valid_keys_pass(compose, override):
    extra = ['data.interactions=x.csv'] if override == 'data=files' else []
    cfg = compose('train', [override, *extra])
    check_keys(cfg, 'train')
    check_override_keys([override], 'train')


def test_embed_and_recommend_keys(compose):
    base = ['checkpoint=run', 'output.dir=out']
    check_keys(compose('embed', [*base, '+model.num_layers=2',
                                 '+output.index_params={hnsw_m: 8}']),
               'embed')
    with pytest.raises(ConfigError,
                       match="did you mean 'walk_chunk_size'"):
        check_keys(compose('embed', [*base, '+walk_chunksize=8']), 'embed')
    with pytest.raises(ConfigError,
                       match="did you mean 'output.index_params.nprobe'"):
        check_keys(compose('embed', [*base,
                                     '+output.index_params={nprobes: 8}']),
                   'embed')
    with pytest.raises(ConfigError, match="did you mean 'model.num_layers'"):
        check_keys(compose('embed', [*base, '+model.num_layer=2']), 'embed')
    with pytest.raises(ConfigError, match="did you mean 'combine'"):
        check_keys(compose('recommend', ['embeddings=e', 'items=[1]',
                                         '+combined=true']), 'recommend')


@pytest.mark.parametrize('args', [
    ['data.batchsize=16'], ['+data.batchsize=16'], ['++data.batchsize=16'],
    ['--cfg', 'job', 'data=files', 'data.batchsize=16'],
])
def test_command_line_typo_with_or_without_plus(args):
    with pytest.raises(ConfigError,
                       match=r"unknown key 'data.batchsize' \(command line: "
                             r"'\+{0,2}data.batchsize=16'\); did you mean "
                             r"'data.batch_size'\?"):
        check_override_keys(args, 'train')


def test_command_line_leaves_groups_hydra_and_deletions_alone():
    check_override_keys(['data=files', 'hydra.run.dir=/tmp/x',
                         'hydra/job_logging=disabled', '~data.items',
                         'model.out_channels=4,8', '-m', '--cfg', 'job'],
                        'train')


def test_new_yaml_keys_are_known_without_code(tmp_path, monkeypatch, compose):
    # The schema is read from the packaged configs: a key added to any
    # option of a group (or a whole new group) is valid at once.
    pkg = Path(config_mod.__file__).parent / 'configs'
    copy = tmp_path / 'configs'
    shutil.copytree(pkg, copy)
    with open(copy / 'loss' / 'max_margin.yaml', 'a') as f:
        f.write('new_option: 1\n')
    (copy / 'augment').mkdir()
    (copy / 'augment' / 'next.yaml').write_text('window: 1\n')
    text = (copy / 'train.yaml').read_text().replace(
        '  - model: pinsage\n', '  - model: pinsage\n  - augment: next\n')
    (copy / 'train.yaml').write_text(text)
    monkeypatch.setattr(config_mod, '_configs_dir', lambda: copy)
    for fn in (config_mod.config_schema, config_mod.config_groups):
        fn.cache_clear()
    try:
        check_override_keys(['+loss.new_option=2', 'augment.window=3'],
                            'train')
        with pytest.raises(ConfigError, match="did you mean 'augment."
                                              "window'"):
            check_override_keys(['augment.windo=3'], 'train')
    finally:
        monkeypatch.undo()
        for fn in (config_mod.config_schema, config_mod.config_groups):
            fn.cache_clear()
    assert 'new_option' not in config_schema('train')['loss']


def run_cli(exe, args, cwd):
    return subprocess.run([str(BIN / exe), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('exe, args, suggestion', [
    ('pinsage-train', ['+data.batchsize=16'], 'data.batch_size'),
    ('pinsage-train', ['data.batchsize=16'], 'data.batch_size'),
    ('pinsage-embed', ['checkpoint=x', 'output.dir=y', '+chunksize=8'],
     'chunk_size'),
    ('pinsage-recommend', ['embeddings=x', 'items=[1]', 'kk=3'], 'k'),
])
def test_cli_refuses_typos_with_one_error_line(tmp_path, exe, args,
                                               suggestion):
    proc = run_cli(exe, [*args, f'hydra.run.dir={tmp_path / "run"}'],
                   tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith('error: Invalid config: unknown key')
    assert f"did you mean '{suggestion}'?" in errors[0]
    assert 'error' not in proc.stdout
    assert not (tmp_path / 'run').exists()  # nothing ran
