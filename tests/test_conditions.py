"""A run's condition: its resolved config less seeds, paths and tracking, as a hash and values."""

from __future__ import annotations

from gptlab.conditions import NON_IDENTITY_KEYS, Condition, flatten


def test_runs_differing_only_in_seeds_paths_or_tracking_share_a_condition(compose_config) -> None:
    def condition(*overrides: str) -> Condition:
        return Condition.of(compose_config("regime=finetune", "task=rte", *overrides))

    base = condition("seed=1", "paths.output_dir=/a")
    same = condition("seed=2", "paths.output_dir=/b", "paths.data_dir=/elsewhere", "logger=tensorboard", "tags=[x]",
                     "trainer.log_every_n_steps=1", "callbacks.progress_bar=null")
    assert same == base
    # values as written: not the seed, nor the copies interpolated from it or from other keys
    assert not {"seed", "regime.datamodule.seed", "regime.module.model.n_layer", "task.data_dir"} & set(base.values)
    assert base.values["model.n_layer"] == 3 and base.values["regime.module.lm_lambda"] == 0.5
    assert not any(key.startswith(("logger.", "callbacks.progress_bar")) for key in base.values)

    other = condition("seed=1", "regime.module.lm_lambda=0")
    assert other.hash != base.hash
    assert {k for k in base.values if base.values[k] != other.values.get(k)} == {"regime.module.lm_lambda"}


def test_the_few_shot_sampling_seed_is_a_seed_too(compose_config) -> None:
    one, two = (
        Condition.of(compose_config("regime=few_shot", "task=demo_topic", f"regime.fewshot_seed={s}")) for s in (1, 2)
    )
    assert one == two and "regime.fewshot_seed" not in one.values


def test_keys_that_do_not_define_a_job_are_left_out_of_its_directory_name_too(compose_config) -> None:
    hydra_cfg = compose_config(return_hydra_config=True).hydra
    assert set(NON_IDENTITY_KEYS) <= set(hydra_cfg.job.config.override_dirname.exclude_keys)


def test_flatten_names_every_leaf_by_its_dotted_key() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None}) == {"a.b": 1, "a.c": [1, 2], "a.d": {}, "e": None}
