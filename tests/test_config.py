"""Config loading: presets load, typos and bad values fail with messages naming key, value and options."""

from __future__ import annotations

import json

import pytest

from resume.cli import main
from resume.config import SYSTEMS, ResumeConfig, dump_config, load_config
from resume.errors import ConfigError


@pytest.mark.parametrize("name", ["tiny", "demo", "cranfield", "paper"])
def test_presets_load(repo_root, name):
    cfg = load_config(repo_root / "configs" / f"{name}.yaml")
    assert isinstance(cfg, ResumeConfig)
    assert cfg.name == name


def test_cranfield_preset_is_the_demo_on_the_whole_collection(repo_root):
    """configs/cranfield.yaml differs from the demo only in the working set, the OOD set, GRPO steps and prompts
    per step, and the experiment."""
    from resume.config import flatten

    demo = flatten(load_config(repo_root / "configs" / "demo.yaml").to_dict())
    full = flatten(load_config(repo_root / "configs" / "cranfield.yaml").to_dict())
    diff = {k for k in demo.keys() | full.keys() if demo.get(k) != full.get(k)}
    assert diff == {"name", "data.max_train_queries", "data.max_eval_queries", "data.distractors", "data.ood",
                    "data.ood_max_queries", "data.ood_distractors",
                    "grpo.max_steps", "grpo.gradient_accumulation_steps", "loop.max_iterations", "tracking.experiment"}
    assert full["data.ood"] == "data/medline" and demo["data.ood"] is None
    assert (full["data.max_train_queries"], full["data.max_eval_queries"], full["data.distractors"]) == (None,) * 3


def test_paper_preset_carries_the_papers_hyperparameters(repo_root):
    cfg = load_config(repo_root / "configs" / "paper.yaml")
    assert cfg.summarizer.model == "Qwen/Qwen3-4B-Thinking-2507"
    assert cfg.retriever.model == "facebook/contriever"
    assert (cfg.grpo.learning_rate, cfg.grpo.max_steps, cfg.grpo.beta, cfg.grpo.loss_type) == (3e-7, 200, 0.5, "grpo")
    # "batch 128" = completions per optimiser step across the Ray workers
    g = cfg.grpo
    assert g.per_device_train_batch_size * g.gradient_accumulation_steps * g.num_workers == 128
    assert cfg.finetune.learning_rate == 1e-5
    assert cfg.loop.max_iterations == 10
    assert (cfg.reward.min_tokens, cfg.reward.max_tokens, cfg.reward.over_limit) == (64, 128, 160)


def test_typo_lists_valid_keys(repo_root):
    with pytest.raises(ConfigError) as e:
        load_config(repo_root / "configs" / "tiny.yaml", ["grpo.learnig_rate=0.1"])
    msg = str(e.value)
    assert "grpo.learnig_rate: unknown key" in msg
    assert "learning_rate" in msg and "num_generations" in msg
    assert "tiny.yaml" in msg


def test_top_level_typo(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("retreiver:\n  model: x\n")
    with pytest.raises(ConfigError, match=r"retreiver: unknown key; valid keys: .*retriever"):
        load_config(p)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("evaluate.index=foo", "evaluate.index: invalid value 'foo'; expected one of 'flat', 'ivf', 'hnsw'"),
        ("grpo.max_steps=two", "grpo.max_steps: invalid value 'two'; expected int"),
        ("grpo.num_generations=3", "must be divisible by num_generations (3)"),
        ("grpo.learning_rate=-1", "grpo.learning_rate: invalid value -1.0"),
        ("finetune.batch_size=1", "finetune.batch_size: invalid value 1"),
        ("reward.min_tokens=200", "0 < min_tokens <= max_tokens <= over_limit"),
        ("loop.systems=[baseline,nope]", "loop.systems: invalid value 'nope'; expected one of baseline"),
        ("retriever.normalize=maybe", "retriever.normalize: invalid value 'maybe'; expected bool"),
        ("data=3", "data: expected a mapping"),
    ],
)
def test_bad_values_name_key_value_and_allowed(repo_root, override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(repo_root / "configs" / "tiny.yaml", [override])
    assert fragment in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_int_is_accepted_for_float_and_roundtrip(tmp_path, repo_root):
    cfg = load_config(repo_root / "configs" / "demo.yaml", ["grpo.learning_rate=1"])
    assert cfg.grpo.learning_rate == 1.0 and isinstance(cfg.grpo.learning_rate, float)
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert load_config(out) == cfg
    assert load_config(None).loop.systems == list(SYSTEMS)



def test_exponent_floats_without_a_dot_are_floats(tmp_path, repo_root):
    """`--set grpo.learning_rate=1e-6` (and the same in a YAML file): PyYAML reads it as a string."""
    cfg = load_config(repo_root / "configs" / "demo.yaml", ["grpo.learning_rate=1e-6", "finetune.learning_rate=2E-5"])
    assert cfg.grpo.learning_rate == 1e-6 and cfg.finetune.learning_rate == 2e-5
    f = tmp_path / "c.yaml"
    f.write_text("grpo:\n  learning_rate: 3e-7\n")
    assert load_config(f).grpo.learning_rate == 3e-7
    for bad in ("e-6", "1e", "1e-6x", "nan"):  # still errors, naming the key
        with pytest.raises(ConfigError, match="grpo.learning_rate"):
            load_config(None, [f"grpo.learning_rate={bad}"])
    with pytest.raises(ConfigError, match="summarizer.max_new_tokens"):  # an int field does not take it
        load_config(None, ["summarizer.max_new_tokens=1e2"])


def test_cli_reports_config_error_in_one_line(repo_root, capsys):
    rc = main(["evaluate", "--config", str(repo_root / "configs" / "tiny.yaml"), "--set", "evaluate.kk=3",
               "--out", "/nonexistent/never-written"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "evaluate.kk: unknown key" in err[0]


def test_data_ood_loads_from_yaml_and_checks_types(tmp_path):
    """data.ood / data.ood_split (the out-of-distribution BEIR set, evaluated without further training)."""
    assert (load_config(None).data.ood, load_config(None).data.ood_split) == (None, "test")
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  ood: data/medline\n  ood_split: test\n")
    cfg = load_config(p)
    assert (cfg.data.ood, cfg.data.ood_split) == ("data/medline", "test")
    assert load_config(p, ["data.ood=hf:BeIR/nfcorpus"]).data.ood == "hf:BeIR/nfcorpus"  # not checked on disk
    assert load_config(p, ["data.ood=data/does-not-exist"]).data.ood == "data/does-not-exist"  # run start checks
    for text, fragment in (("data:\n  ood: 3\n", "data.ood: invalid value 3"),
                           ("data:\n  ood: [a, b]\n", "data.ood: invalid value"),
                           ("data:\n  ood_split: ''\n", "data.ood_split: invalid value ''")):
        p.write_text(text)
        with pytest.raises(ConfigError, match="expected") as e:
            load_config(p)
        assert fragment in str(e.value), str(e.value)


def _dataclasses(cls) -> list[type]:
    """`cls` and every config dataclass nested in it."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    return [cls] + [c for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])
                    for c in _dataclasses(hints[f.name])]


def test_every_config_field_has_help():
    """Each field carries `metadata={"help": ...}` (as TRL's GRPOConfig does), sections included."""
    import dataclasses

    classes = _dataclasses(ResumeConfig)
    assert len(classes) == 10
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
               if not str(f.metadata.get("help", "")).strip()]
    assert missing == []


def test_help_config_prints_every_key_with_default_and_help_without_loading_models():
    """`resume run --help-config` (no --out needed): every dotted key of the config, its default and its help;
    no torch/transformers import (a fresh interpreter, so nothing else imported them first)."""
    import subprocess
    import sys

    from resume.config import config_keys, flatten

    code = ("import sys\nfrom resume.cli import main\ntry:\n    main(['run', '--help-config'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'faiss') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "HEAVY []" in out
    keys = flatten(ResumeConfig().to_dict())
    assert [k for k, *_ in config_keys()] == list(keys)
    lines = out.splitlines()
    for key, _tp, default, help_ in config_keys():
        i = next((n for n, line in enumerate(lines) if line.strip().startswith(f"{key} = ")), None)
        assert i is not None, f"{key} not printed"
        assert lines[i].strip().startswith(f"{key} = {json.dumps(default)}"), lines[i]
        assert help_.split()[0] in lines[i + 1], (key, lines[i + 1])
    assert "grpo.learning_rate = 3e-07" in out and "loop.systems = [\"baseline\"" in out
