r"""A column formatter that lays text out exactly as Go's ``text/tabwriter`` does.

``ctr`` prints its tables through ``tabwriter.NewWriter(out, minwidth,
tabwidth, padding, padchar, 0)``; scripts parse the result, so the spacing
must match byte for byte. Text is split into lines and lines into
tab-terminated cells; the text after a line's last tab is not part of any
column. Adjacent lines that have a cell in the same column form a block whose
width is its widest cell plus ``padding`` (at least ``minwidth``). With
``padchar="\t"`` widths are rounded up to multiples of ``tabwidth`` and
padding is written as tabs.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO


class TabWriter:
    r"""Buffers text and writes it aligned on :meth:`flush`.

    Args:
        out: where aligned text goes.
        minwidth: minimal cell width including padding.
        tabwidth: width of a tab, used when ``padchar`` is a tab.
        padding: added to a column's widest cell.
        padchar: ``" "`` or ``"\t"``.
    """

    def __init__(
        self, out: TextIO, minwidth: int, tabwidth: int, padding: int, padchar: str = " "
    ) -> None:
        self._out = out
        self._minwidth = minwidth
        self._tabwidth = tabwidth
        self._padding = padding
        self._padchar = padchar
        self._buf: list[str] = []

    def write(self, text: str) -> None:
        """Buffer ``text``."""
        self._buf.append(text)

    def println(self, *parts: object) -> None:
        """Buffer ``parts`` joined by spaces plus a newline (Go's ``fmt.Fprintln``)."""
        self._buf.append(" ".join(str(p) for p in parts) + "\n")

    def flush(self) -> None:
        """Write everything buffered, aligned, and empty the buffer."""
        text = "".join(self._buf)
        self._buf.clear()
        self._out.write(self.format(text))
        self._out.flush()

    def format(self, text: str) -> str:
        """``text`` aligned (without writing it)."""
        lines = [line.split("\t") for line in text.split("\n")]
        out: list[str] = []
        self._format(lines, [], 0, len(lines), out)
        return "".join(out)

    def _format(
        self, lines: list[list[str]], widths: list[int], line0: int, line1: int, out: list[str]
    ) -> int:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            # A block of lines with a cell in this column starts here.
            self._write_lines(lines, widths, line0, this, out)
            line0 = this
            width = self._minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + self._padding)
                this += 1
            widths.append(width)
            self._format(lines, widths, line0, this, out)
            widths.pop()
            line0 = this
        self._write_lines(lines, widths, line0, line1, out)
        return line1

    def _write_lines(
        self, lines: list[list[str]], widths: list[int], line0: int, line1: int, out: list[str]
    ) -> None:
        for i in range(line0, line1):
            for j, cell in enumerate(lines[i]):
                out.append(cell)
                if j < len(widths):
                    out.append(self._pad(len(cell), widths[j]))
            if i + 1 < len(lines):
                out.append("\n")

    def _pad(self, textw: int, cellw: int) -> str:
        if self._padchar == "\t":
            if self._tabwidth == 0:
                return ""
            cellw = -(-cellw // self._tabwidth) * self._tabwidth
            return "\t" * -(-(cellw - textw) // self._tabwidth)
        return self._padchar * (cellw - textw)
