"""Shared figure helpers (``tokenworks.style``)."""
import pytest

from tokenworks.style import palette


def test_a_palette_gives_each_name_its_own_colour_in_order():
    names = [f"m{i}" for i in range(12)]
    colors = palette(names)
    assert list(colors) == names and len(set(colors.values())) == 12
    assert palette(names[:3]) == {n: colors[n] for n in names[:3]}  # a prefix keeps its colours
    with pytest.raises(ValueError, match="palette of"):
        palette([f"m{i}" for i in range(40)])
