"""Console output that stays readable in a terminal, a pipe and a log file.

- :func:`wide_console`: stdout, widened to 160 columns when it is a pipe or a file (rich would
  assume 80 there).
- :class:`FitTable`: a table that fits whatever width it is drawn at without cutting a cell:
  whole when it fits, else split into several tables that each repeat the key column (the
  agent), else (a key too long for that) one block per row of ``header value`` pairs.
  Headers wrap at spaces; cells never wrap, fold or get an ellipsis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

PAD = 1  # spaces either side of a cell
MAX_SPLITS = 3  # more tables than this for one set of rows reads worse than one block per row


def wide_console(console: Console | None = None, width: int = 160) -> Console:
    """``console`` (default: stdout), but at least ``width`` columns when it is a pipe or a log file,
    where rich would assume 80 and squeeze the tables."""
    console = console or Console()
    if console.is_terminal or console.width >= width:
        return console
    return Console(width=width, file=console.file)


def _longest_word(s: str) -> int:
    return max((len(w) for w in s.split()), default=0)


class FitTable:
    """A titled table of string cells that never truncates one (see the module doc).

    ``headers``: column titles (they may wrap at spaces); ``rows``: one list of cells per row, as
    long as ``headers``; ``keys``: how many leading columns identify a row and are repeated in
    every part of a split table. ``ValueError`` names a row of the wrong length."""

    def __init__(self, title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], keys: int = 1) -> None:
        self.title, self.headers, self.keys = title, list(headers), keys
        self.rows = [list(r) for r in rows]
        if not 1 <= keys <= len(self.headers):
            raise ValueError(f"FitTable {title!r}: keys={keys} must be between 1 and {len(self.headers)}")
        for r in self.rows:
            if len(r) != len(self.headers):
                raise ValueError(f"FitTable {title!r}: row {r[:1]} has {len(r)} cells for {len(self.headers)} columns")
        self.cell_w = [max((len(r[i]) for r in self.rows), default=0) for i in range(len(self.headers))]
        # a column is as narrow as its widest cell or its longest header word, as wide as its header
        self.min_w = [max(c, _longest_word(h), 1) for c, h in zip(self.cell_w, self.headers, strict=True)]
        self.max_w = [max(m, len(h)) for m, h in zip(self.min_w, self.headers, strict=True)]

    def width_of(self, cols: Sequence[int]) -> int:
        """Columns needed to draw columns ``cols`` without wrapping a cell (the style of :meth:`_table`)."""
        return sum(self.min_w[i] + 2 * PAD for i in cols) + len(cols) - 1

    def layout(self, width: int) -> list[list[int]] | None:
        """The column groups drawn at ``width`` (one group: the whole table); None: one block per row."""
        keys, rest = list(range(self.keys)), list(range(self.keys, len(self.headers)))
        if self.width_of(keys + rest) <= width:
            return [keys + rest]
        groups = self._split(keys, rest, width)
        if groups is None or len(groups) > MAX_SPLITS:
            return None
        # the same number of parts, of about equal width: room for the headers in each
        share = self.width_of(keys) + -(-(self.width_of(keys + rest) - self.width_of(keys)) // len(groups))
        even = self._split(keys, rest, min(width, share + max(self.min_w[i] + 2 * PAD + 1 for i in rest) // 2))
        return even if even is not None and len(even) == len(groups) else groups

    def _split(self, keys: list[int], rest: list[int], width: int) -> list[list[int]] | None:
        """``rest`` in order, in as few groups (each led by ``keys``) of at most ``width`` as a greedy
        fill gives; None when ``keys`` and one column do not fit."""
        groups: list[list[int]] = []
        for i in rest:
            if groups and self.width_of(groups[-1] + [i]) <= width:
                groups[-1].append(i)
            elif self.width_of(keys + [i]) <= width:
                groups.append(keys + [i])
            else:
                return None
        return groups

    def widths(self, cols: Sequence[int], width: int) -> list[int]:
        """Content widths of ``cols`` drawn in ``width`` columns: each at least its minimum, then the
        room left goes to the columns whose header would otherwise wrap, narrowest need first."""
        w = [self.min_w[i] for i in cols]
        room = width - self.width_of(cols)
        for k in sorted(range(len(cols)), key=lambda k: self.max_w[cols[k]] - w[k]):
            extra = min(room, self.max_w[cols[k]] - w[k])
            w[k] += extra
            room -= extra
        return w

    def _table(self, title: str, cols: list[int], width: int) -> Table:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, PAD))
        for i, w in zip(cols, self.widths(cols, width), strict=True):
            # fixed widths: rich's own squeezing can cut cells (it ignores min_width when collapsing)
            t.add_column(self.headers[i], justify="left" if i < self.keys else "right", width=w, overflow="fold")
        for r in self.rows:
            t.add_row(*(r[i] for i in cols))
        return t

    def _blocks(self, width: int) -> RenderResult:
        """One block per row: its keys on a line, then ``header value`` pairs packed into columns."""
        yield Text(self.title)
        rest = list(range(self.keys, len(self.headers)))
        hw = max((len(self.headers[i]) for i in rest), default=0)
        vw = max((self.cell_w[i] for i in rest), default=0)
        per_line = max(1, (width - 2 + 3) // (hw + 1 + vw + 3))  # 2 indent, 3 between pairs
        for r in self.rows:
            yield Text("  ".join(r[: self.keys]), style="bold", overflow="fold")
            pairs = [f"{self.headers[i]:<{hw}} {r[i]:>{vw}}" for i in rest]
            for k in range(0, len(pairs), per_line):
                yield Text("  " + "   ".join(pairs[k: k + per_line]), overflow="fold")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        groups = self.layout(options.max_width)
        if groups is None:
            yield from self._blocks(options.max_width)
            return
        for n, cols in enumerate(groups):
            title = self.title if n == 0 else f"{self.title} (continued)"
            yield self._table(title, cols, options.max_width)
