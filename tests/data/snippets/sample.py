"""Module docstring."""
import functools


# Comment before a decorated function
@functools.lru_cache(maxsize=None)
def cached(x: int) -> int:
    """Doc."""
    return x * 2


async def fetch(url):
    def inner():
        return url
    return inner()


class Outer(Base, metaclass=Meta):
    """Outer class."""

    class Inner:
        def inner_method(self):
            pass

    @property
    def value(self):
        return 1

    @staticmethod
    @other
    def static_one():
        return 2

    async def run(self):
        lam = lambda: 3
        return lam()


@dataclass
class Point:
    x: int
    y: int

    def norm(self) -> float:
        return (self.x ** 2 + self.y ** 2) ** 0.5
