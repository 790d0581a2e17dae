"""Progress reporting hook. The library never draws bars itself: the caller (the CLI) passes a
factory, e.g. one that makes tqdm bars; by default nothing is shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix_str(self, text: str) -> Any: ...

    def close(self) -> Any: ...


ProgressFactory = Callable[..., ProgressBar]  # (total=..., desc=..., leave=...) -> bar


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def silent(**_: Any) -> ProgressBar:
    return _Silent()
