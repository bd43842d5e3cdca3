"""ENV steps: the fast path that appends new keys gives exactly the Env the full rebuild gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from layerbuild.builder.config import env_map, with_env
from layerbuild.image import ImageConfig, empty_config


def _reference(env: list[str], values: dict[str, str]) -> list[str]:
    """What with_env must return: the Env as a dict (later entries win, keys keep their first
    place), updated, written out again."""
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    out.update(values)
    return [f"{k}={v}" for k, v in out.items()]


keys = st.sampled_from(["A", "B", "PATH", "HOME", "X_1", "Y"])
steps = st.lists(st.dictionaries(keys, st.text(max_size=3), min_size=1, max_size=3),
                 max_size=12)
bases = st.lists(st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=3)), max_size=5)


@given(bases, steps)
def test_every_sequence_of_env_steps_matches_the_reference(base: list[str],
                                                           sequence: list[dict[str, str]],
                                                           ) -> None:
    config: ImageConfig = empty_config().with_config(Env=base)
    expected = list(base)
    for values in sequence:
        config = with_env(config, values)
        expected = _reference(expected, values)
        assert config.config["Env"] == expected
        assert env_map(config) == dict(item.partition("=")[::2] for item in expected)


def test_a_base_with_duplicate_keys_is_folded_by_the_first_env() -> None:
    config = empty_config().with_config(Env=["A=1", "B=2", "A=3"])
    assert with_env(config, {"C": "4"}).config["Env"] == ["A=3", "B=2", "C=4"]


def test_env_map_of_a_list_with_env_did_not_make_is_read_afresh() -> None:
    made = with_env(empty_config(), {"A": "1"})
    same_list_changed = made.with_config(Env=["A=2"])
    assert env_map(same_list_changed) == {"A": "2"}
