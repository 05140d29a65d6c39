import pytest

from engine.config import ConfigError, TrainConfig, dump_config, load_config


def write(tmp_path, text):
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_roundtrip(tmp_path):
    cfg = TrainConfig(n_layer=4, n_head=4, n_embd=128, max_iters=50)
    p = write(tmp_path, dump_config(cfg, run={"sweep": "s", "name": "n"}))
    assert load_config(p) == cfg


@pytest.mark.parametrize("text,needle", [
    ("n_layr = 4\n", "did you mean 'n_layer'"),
    ('n_layer = "four"\n', "n_layer = 'four': expected an integer"),
    ("n_embd = 250\nn_head = 8\n", "n_embd = 250 is not divisible by n_head = 8"),
    ("[sampling]\ntemprature = 0.5\n", "did you mean 'temperature'"),
    ("learning_rate = true\n", "expected a number"),
    ("n_layer = \n", "invalid TOML"),
])
def test_bad_configs_name_file_key_and_value(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_int_accepted_for_float(tmp_path):
    assert load_config(write(tmp_path, "learning_rate = 1\n")).learning_rate == 1.0
