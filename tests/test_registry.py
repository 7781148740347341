"""The Registry class: names, metadata, errors with close matches, duplicates refused."""

from __future__ import annotations

import pytest

from ablate.errors import UserError
from ablate.registry import Registry


def _reg() -> Registry:
    reg = Registry("widget", context=("width", "colour"))

    @reg.register("sprocket", tags=("round",))
    def sprocket(*, width: int, teeth: int = 12, ratio: float = 0.5) -> tuple[int, int, float]:
        """A toothed wheel.

        More text that is not the description."""
        return width, teeth, ratio

    @reg.register("lever")
    def lever(*, length: float = 1.0) -> float:
        """A rigid bar."""
        return length

    return reg


def test_metadata_comes_from_the_builder() -> None:
    e = _reg().get("sprocket")
    assert e.description == "A toothed wheel."
    assert e.params == {"teeth": 12, "ratio": 0.5}  # `width` is caller context, not a param
    assert e.context == ("width",)
    assert e.types == {"teeth": int, "ratio": float}
    assert e.tags == frozenset({"round"})


def test_build_passes_context_and_params() -> None:
    assert _reg().build("sprocket", {"teeth": 7}, width=3) == (3, 7, 0.5)
    # every builder takes only the context it names: callers pass all they have
    assert _reg().build("lever", {"length": 2.0}, width=3, colour="red") == 2.0


def test_builders_take_keywords_and_declared_context_only() -> None:
    reg = Registry("widget", context=("width",))
    with pytest.raises(ValueError, match="keyword-only"):
        reg.register("positional")(lambda width, teeth=1: None)
    with pytest.raises(ValueError, match="context height is not one of this registry's"):
        @reg.register("tall")
        def tall(*, height: int) -> int:
            return height
    with pytest.raises(TypeError, match="needs context width"):
        _reg().build("sprocket")


def test_unknown_name_lists_known_names_and_the_closest() -> None:
    with pytest.raises(UserError, match=r"unknown widget 'sprockte' \(did you mean 'sprocket'\?\); known: lever, sprocket"):
        _reg().get("sprockte")


def test_unknown_param_names_the_closest() -> None:
    with pytest.raises(UserError, match=r"model: unknown parameter 'teeht' for 'sprocket' \(did you mean 'teeth'\?\)"):
        _reg().build("sprocket", {"teeht": 3}, where="model", width=3)


def test_duplicates_and_bad_names_are_refused() -> None:
    reg = _reg()
    with pytest.raises(ValueError, match="duplicate widget name 'lever'"):
        reg.register("lever")(lambda *, length=1.0: None)
    with pytest.raises(ValueError, match="lowercase"):
        reg.register("Lever")


def test_listing_and_filtering() -> None:
    reg = _reg()
    assert reg.names() == ["lever", "sprocket"]
    assert reg.names("spr*") == ["sprocket"]
    assert reg.names(tag="round") == ["sprocket"]
    assert [e.name for e in reg] == ["lever", "sprocket"] and len(reg) == 2 and "lever" in reg
    assert "sprocket" in repr(reg)
