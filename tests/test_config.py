from dataclasses import dataclass
from typing import Literal

import pytest

from unpoison.config import Config, build_config, check, parse_overrides
from unpoison.errors import UnpoisonError


@dataclass
class Demo(Config):
    eps: float = 8 / 255
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    widths: tuple[int, ...] = (1, 2)
    flag: bool = False

    PRESETS = {"paper": {"steps": 100}}

    def validate(self) -> None:
        check(self.steps >= 1, "steps must be ≥ 1")


def test_precedence_defaults_preset_file_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 50\nmode: b\n")
    assert build_config(Demo).steps == 10
    assert build_config(Demo, preset="paper").steps == 100
    assert build_config(Demo, preset="paper", file=f).steps == 50
    c = build_config(Demo, preset="paper", file=f, overrides=["steps=7", "eps=4/255", "widths=3,4", "flag=true"])
    assert (c.steps, c.mode, c.widths, c.flag) == (7, "b", (3, 4), True)
    assert c.eps == pytest.approx(4 / 255)


@pytest.mark.parametrize("over, match", [
    (["nope=1"], "unknown parameter"), (["steps=x"], "integer"), (["mode=c"], "one of"),
    (["steps=0"], "steps must be"), (["steps"], "key=value"), (["flag=maybe"], "true or false"),
])
def test_bad_overrides(over, match):
    with pytest.raises(UnpoisonError, match=match):
        build_config(Demo, overrides=over)


def test_bad_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("a: [1,\n")
    with pytest.raises(UnpoisonError, match="not valid YAML"):
        build_config(Demo, file=f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(UnpoisonError, match="mapping"):
        build_config(Demo, file=f)
    with pytest.raises(UnpoisonError, match="not found"):
        build_config(Demo, file=tmp_path / "missing.yaml")


def test_parse_overrides_types():
    assert parse_overrides(["a=1", "b=0.5", "c=hello", "d=true"]) == {"a": 1, "b": 0.5, "c": "hello", "d": True}


@dataclass
class Switch(Config):
    amp: Literal["auto", "off", "bf16"] = "auto"
    flag: bool = True


def test_yaml11_words_reach_choices_and_bools(tmp_path):
    # `--set amp=off` and `amp: off` in a YAML file must mean the choice "off", not YAML 1.1's False
    assert parse_overrides(["amp=off", "flag=no"]) == {"amp": "off", "flag": "no"}
    c = build_config(Switch, overrides=["amp=off", "flag=no"])
    assert (c.amp, c.flag) == ("off", False)
    f = tmp_path / "c.yaml"
    f.write_text("amp: off\nflag: off\n")
    c = build_config(Switch, file=f)
    assert (c.amp, c.flag) == ("off", False)
    with pytest.raises(UnpoisonError, match="one of"):
        build_config(Switch, overrides=["amp=yes"])
