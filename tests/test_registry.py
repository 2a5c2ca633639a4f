"""The registration table of the pluggable families (data/plugins.json, engine/registry.py)."""

import importlib.util
import json

import pytest

from engine.registry import Registry, check_choice
from engine.resources import data_file


def test_every_listed_module_exists_and_every_family_is_a_registry():
    table = json.loads(data_file("plugins.json").read_text())
    families = {k: v for k, v in table.items() if not k.startswith("_")}
    assert set(families) == {
        "AU back end",
        "dataset kind",
        "chat back end",
        "model base",
        "predictor",
    }
    for family, entries in families.items():
        assert Registry(family).names() == sorted(entries)
        for module in entries.values():
            assert importlib.util.find_spec(module) is not None, (family, module)


def test_an_unknown_choice_names_the_choices():
    check_choice("scope", "a", ("a", "b"))
    with pytest.raises(ValueError, match="unknown scope 'c'; choose one of a, b"):
        check_choice("scope", "c", ("a", "b"))
    with pytest.raises(ValueError, match="unknown predictor 'x'; choose one of csv, expllm"):
        Registry("predictor").get("x")


def test_an_entry_built_without_an_option_it_needs_names_the_option():
    family = Registry("test family")

    @family.register("box")
    class Box:
        def __init__(self, path: str, size: int = 1, *rest, **more):
            self.path, self.size = path, size

    with pytest.raises(ValueError, match=r"test family 'box' needs the option\(s\) \['path'\]"):
        family.create("box", size=2)
    assert family.create("box", path="p").path == "p"
