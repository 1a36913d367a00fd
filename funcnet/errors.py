"""The errors a layer raises, and how combinators add where in the model they happened."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class _Where:
    """One step of the path from the model to the failing layer."""

    name: str
    kind: str
    position: int | None


class LayerError(Exception):
    """A problem with a layer's input, parameters or configuration, reported with its place.

    Combinators catch it on the way out and record which child it came from (``locate``) and
    which sibling produced that child's input (``set_source``), so the final message names the
    full path of both, the failing layer's position, and the model's input spec.
    """

    def __init__(self, detail: str, *, hint: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        self.path: list[_Where] = []
        self.source: _Where | None = None
        self._source_depth = 0
        self.model_input: Any = None

    def locate(self, name: str, kind: str, position: int | None) -> LayerError:
        self.path.insert(0, _Where(name, kind, position))
        return self

    def set_source(self, name: str, kind: str, position: int) -> None:
        """Records the sibling (of the child just located) that produced the failing input."""
        if self.source is None:
            self.source = _Where(name, kind, position)
            # Containers located later sit above the source too: its full path is their names + name.
            self._source_depth = len(self.path)

    def source_path(self) -> str | None:
        """The producing layer's full path (``residual_0/conv2d_0``), or None if not known."""
        if self.source is None:
            return None
        outer = self.path[:len(self.path) - self._source_depth]
        return "/".join([w.name for w in outer] + [self.source.name])

    def __str__(self) -> str:
        lines = []
        if self.path:
            leaf = self.path[-1]
            where = f"Layer '{'/'.join(w.name for w in self.path)}' ({leaf.kind}"
            if leaf.position is not None:
                where += f", position {leaf.position} in its container"
            lines.append(f"{where}): {self.detail}")
        else:
            lines.append(self.detail)
        if self.source is not None:
            lines.append(
                f"Its input was produced by '{self.source_path()}' ({self.source.kind}, "
                f"position {self.source.position})."
            )
        if self.model_input is not None:
            lines.append(f"The model's input was {self.model_input}.")
        if self.hint:
            lines.append(f"Hint: {self.hint}")
        return "\n".join(lines)


class ShapeError(LayerError, ValueError):
    """An input or parameter has a shape (or structure) the layer cannot take."""


class InputTypeError(ShapeError, TypeError):
    """An input has a dtype the layer cannot take (integer images into Dense, a float mask).

    A subclass of :class:`ShapeError`, since the dtype is part of the spec.
    """


class ParamsError(LayerError, ValueError):
    """``params`` or ``state`` do not have the structure the layer was built with."""


class MissingKeyError(LayerError, ValueError):
    """A random layer was applied with ``train=True`` but no ``key``."""


class MissingInputError(LayerError, ValueError):
    """A layer reads a side input that is not in its ``context``."""
