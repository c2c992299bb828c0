import pytest

from unpoison.errors import UnpoisonError
from unpoison.registry import Registry


def test_registry_lookup_and_errors():
    r: Registry[int] = Registry("thing")
    r.register("One", 1)

    @r.register("two")
    def two():
        return 2

    assert r.get("one") == 1 and r.get("TWO") is two and r.names() == ["one", "two"] and "one" in r
    with pytest.raises(UnpoisonError, match="unknown thing 'three'; known: one, two"):
        r.get("three")
    with pytest.raises(KeyError):
        r.register("one", 5)
