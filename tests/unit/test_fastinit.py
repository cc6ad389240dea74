"""fast_init: the same frozen records as dataclasses builds, filled through the slots."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from bridge.fastinit import fast_init


def _pair() -> tuple[type, type]:
    """The same record twice: with the dataclass __init__ and with fast_init's."""
    made = []
    for fast in (False, True):
        @dataclasses.dataclass(frozen=True, slots=True)
        class Rec:
            a: int
            b: str = "b"
            c: tuple[int, ...] = ()
            d: list[int] = dataclasses.field(default_factory=list)
            e: int = dataclasses.field(default=5, init=False)
            f: dict[str, int] = dataclasses.field(default_factory=dict, kw_only=True)
            g: float = dataclasses.field(default=1.5, kw_only=True)

            def __post_init__(self) -> None:
                if self.a < 0:
                    raise ValueError("a must not be negative")
        made.append(fast_init(Rec) if fast else Rec)
    return made[0], made[1]


PLAIN, FAST = _pair()


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int

CALLS = [
    ((1,), {}),
    ((1, "x"), {}),
    ((1, "x", (2, 3), [4]), {}),
    ((1,), {"f": {"k": 1}, "g": 2.5}),
    ((), {"a": 7, "d": [1], "g": 0.0}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_same_record_as_dataclasses_builds(args: tuple, kwargs: dict) -> None:
    plain, fast = PLAIN(*args, **kwargs), FAST(*args, **kwargs)
    assert [getattr(fast, f.name) for f in dataclasses.fields(FAST)] == \
           [getattr(plain, f.name) for f in dataclasses.fields(PLAIN)]
    assert repr(fast).split("(", 1)[1] == repr(plain).split("(", 1)[1]
    assert fast == FAST(*args, **kwargs) and fast is not FAST(*args, **kwargs)


def test_still_frozen_and_factories_are_fresh() -> None:
    one, two = FAST(1), FAST(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    assert one.d == [] and one.d is not two.d and one.f is not two.f
    assert one.e == 5


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), ((1, "x", (), [], 9), {}), ((1,), {"e": 3}),
                                              ((1,), {"nope": 1})])
def test_bad_calls_fail_alike(args: tuple, kwargs: dict) -> None:
    with pytest.raises(TypeError):
        PLAIN(*args, **kwargs)
    with pytest.raises(TypeError):
        FAST(*args, **kwargs)


def test_post_init_runs() -> None:
    with pytest.raises(ValueError, match="negative"):
        FAST(-1)


def test_replace_copy_pickle_and_hash() -> None:
    rec = FAST(1, "x", (2,), [3], f={"k": 1})
    assert dataclasses.replace(rec, b="y").b == "y" and dataclasses.replace(rec, b="y").d == [3]
    assert copy.copy(rec) == rec and copy.deepcopy(rec) == rec
    point = Point(1, 2)
    assert pickle.loads(pickle.dumps(point)) == point
    assert hash(Point(1, 2)) == hash(point) and point != Point(2, 1)


def test_refuses_records_it_cannot_fill() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (NoSlots, NotFrozen):
        with pytest.raises(TypeError, match="frozen dataclass with slots"):
            fast_init(cls)
