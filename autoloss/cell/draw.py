"""A picture of a cell as a graph (PNG), in the manner of the CHASE paper's Figure 2, with matplotlib only.

Left: the two inputs; middle: the four nodes (0..3), left to right; right: the output, the channel
concatenation of the nodes. Each edge other than ``none`` is an arrow labelled with its operation;
a node that is identically zero (see :mod:`autoloss.cell.canonical`) is drawn grey.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from autoloss.cell.canonical import zero_nodes
from autoloss.cell.genotype import NODES, Genotype, check

COLOURS = {"input": "#b4dcb4", "node": "#add8e6", "zero": "#d9d9d9", "output": "#eee8aa"}
OP_COLOURS = {"sep_conv": "#1f5fa8", "dil_conv": "#7b3fa0", "pool": "#b86e00", "skip_connect": "#2e7d32"}
RADIUS = 0.42


STEP = 2.3  # horizontal distance between nodes


def _positions() -> dict[str, tuple[float, float]]:
    """Inputs top-left and bottom-left, the nodes in a row, the output at the row's end."""
    places = {"in0": (0.0, 1.5), "in1": (0.0, -1.5)}
    for k in range(NODES):
        places[f"n{k}"] = (2.4 + STEP * k, 0.0)
    places["out"] = (2.4 + STEP * NODES, 0.0)
    return places


def _bend(a: tuple[float, float], b: tuple[float, float], height: float) -> float:
    """The arc3 ``rad`` that lifts the middle of the edge a -> b by ``height`` (negative: down) off the chord."""
    length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
    return -2.0 * height / length


def _colour(op: str) -> str:
    for prefix, colour in OP_COLOURS.items():
        if prefix in op:
            return colour
    return "#444444"


def draw_cell(genotype: Genotype, path: str | Path, input_names: tuple[str, str] = ("Block3", "Block4"),
              title: str | None = None) -> Path:
    """Write the cell's graph as a PNG to ``path`` (parent folders created) and return the path."""
    check(genotype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    places = _positions()
    zero = zero_nodes(genotype)
    fig = Figure(figsize=(12.5, 6))  # no pyplot: no global backend or figure state
    ax = fig.subplots()
    ax.set_aspect("equal")
    ax.axis("off")

    labels = {"in0": f"{input_names[0]}\n$c_{{k-2}}$", "in1": f"{input_names[1]}\n$c_{{k-1}}$", "out": "$c_{k}$"}
    for name, (x, y) in places.items():
        if name.startswith("in"):
            colour, text = COLOURS["input"], labels[name]
        elif name == "out":
            colour, text = COLOURS["output"], labels[name]
        else:
            k = int(name[1:])
            colour, text = (COLOURS["zero"] if k + 2 in zero else COLOURS["node"]), str(k)
        ax.add_patch(Circle((x, y), RADIUS, facecolor=colour, edgecolor="black", lw=1.2, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=10 if name.startswith("in") else 13, zorder=4)

    def arrow(a: str, b: str, rad: float, colour: str, label: str | None, lw: float):
        (x1, y1), (x2, y2) = places[a], places[b]
        dx, dy = x2 - x1, y2 - y1
        # arc3's quadratic Bezier: control point and midpoint (equal aspect: data and display agree).
        cx, cy = (x1 + x2) / 2 + rad * dy, (y1 + y2) / 2 - rad * dx
        mx, my = (x1 + x2) / 2 + rad * dy / 2, (y1 + y2) / 2 - rad * dx / 2

        def on_rim(x, y):  # where the curve leaves the circle at (x, y): along the tangent, towards the control
            tx, ty = cx - x, cy - y
            norm = (tx * tx + ty * ty) ** 0.5
            return x + RADIUS * tx / norm, y + RADIUS * ty / norm

        start, end = on_rim(x1, y1), on_rim(x2, y2)
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=14, lw=lw, color=colour, shrinkA=0, shrinkB=0, zorder=2))
        if label:
            ax.text(mx, my, label, ha="center", va="center", fontsize=8.5, color=colour, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.18", facecolor="white", edgecolor=colour, lw=0.6))

    state_name = {0: "in0", 1: "in1", **{k + 2: f"n{k}" for k in range(NODES)}}
    for k in range(NODES):
        pairs = genotype.node(k)
        twin = pairs[0][1] == pairs[1][1] and all(op != "none" for op, _ in pairs)
        for slot, (op, source) in enumerate(pairs):
            if op == "none":
                continue
            a, b = places[state_name[source]], places[f"n{k}"]
            if source < 2:  # from an input: bow away from the row, more for farther nodes
                height = (0.25 + 0.45 * k) * (1 if source == 0 else -1)
            elif source == k + 1:  # from the previous node: straight
                height = 0.0
            else:  # over the nodes in between (under, for the second of two such edges)
                other_op, other = pairs[1 - slot]
                both_jump = other_op != "none" and 2 <= other < k + 1
                height = (0.6 + 0.35 * (k - source)) * (-1 if both_jump and slot == 1 else 1)
            if twin:
                height += 0.5 * (1 if slot == 0 else -1)
            arrow(state_name[source], f"n{k}", _bend(a, b, height), _colour(op), op, 1.6)
    for k in range(NODES):  # into the concatenation: under the row
        arrow(f"n{k}", "out", _bend(places[f"n{k}"], places["out"], -0.35 * (NODES - 1 - k)), "#a0a0a0", None, 0.9)

    xs = [x for x, _ in places.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-3.1, 3.3)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    from autoloss.files import write_atomic

    return write_atomic(path, lambda file: fig.savefig(file, dpi=110, format="png"))
