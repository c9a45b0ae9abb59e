"""Collapsed stacks as the node lists of a plotly icicle, capped so the page stays small.

A profile of a few seconds holds thousands of distinct stacks; drawn whole, the
icicle would make the report megabytes larger and unreadable. Frames that carry
less than ``min_share`` of all samples are folded into their parent (their
samples stay in the parent's total, shown as the parent's own time), and at most
``max_nodes`` nodes are kept, largest first.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.rundir.stacks import Frame, Stack

ROOT_ID = "all"


@dataclass
class _Node:
    label: str
    hover: str
    value: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class IcicleData:
    """Parallel lists for ``go.Icicle(ids=, labels=, parents=, values=, branchvalues="total")``.

    ``values`` are sample counts including descendants; ``folded_nodes`` counts the
    distinct frames left out (below the share or beyond the node cap).
    """

    ids: list[str]
    labels: list[str]
    parents: list[str]
    values: list[int]
    hovers: list[str]
    total_samples: int
    folded_nodes: int


def _short(frame: Frame) -> tuple[str, str]:
    """(label, hover text): the label is the function and file name, the hover the full path."""
    if frame.file is None:
        return frame.function, frame.function
    line = f":{frame.line}" if frame.line is not None else ""
    return (f"{frame.function} ({os.path.basename(frame.file)})",
            f"{frame.function} ({frame.file}{line})")


def _merge(stacks: Iterable[Stack], keep_process_frames: bool) -> _Node:
    """The stacks as one tree keyed by function and file; counts summed."""
    root = _Node("all samples", "all samples")
    for stack in stacks:
        node = root
        node.value += stack.count
        for frame in stack.frames:
            if frame.is_process and not keep_process_frames:
                continue
            label, hover = _short(frame)
            child = node.children.get(frame.key)
            if child is None:
                child = node.children[frame.key] = _Node(label, hover)
            child.value += stack.count
            node = child
    return root


def _cut_trunk(root: _Node, trunk_share: float) -> _Node:
    """Drop single callers holding at least ``trunk_share`` of the samples from the top,
    named in the new root's hover text."""
    trunk: list[str] = []
    while len(root.children) == 1:
        only = next(iter(root.children.values()))
        if only.value < trunk_share * root.value:
            break
        trunk.append(only.label)
        root = _Node("all samples", "", root.value, only.children)
    if trunk:
        root.label = f"all samples (below {trunk[-1]})"
        root.hover = "all samples, below the common trunk: " + " > ".join(trunk)
    return root


def build_icicle(stacks: Iterable[Stack], min_share: float = 0.005, max_nodes: int = 400,
                 keep_process_frames: bool = False, trunk_share: float = 0.99) -> IcicleData:
    """Merge stacks into a tree keyed by function and file (lines merged), then cap it.

    Process frames (``process PID: command``) are dropped unless asked for, so the
    samples of all service workers merge into one picture of where time goes. The
    trunk, single callers that hold at least ``trunk_share`` of their parent's samples
    (a server's main loop: ``Arbiter.run`` and the like), is cut off the top and named
    in the root's hover text, so the first rows on screen are where the work differs.
    """
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"min_share must be in [0, 1) (got {min_share!r})")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1 (got {max_nodes!r})")
    root = _merge(stacks, keep_process_frames)
    total = root.value
    root = _cut_trunk(root, trunk_share)
    threshold = max(1, min_share * total)
    ids, labels, parents, values, hovers = [ROOT_ID], [root.label], [""], [total], [root.hover]
    folded = 0
    # Best-first walk: the largest frames are kept when the node cap bites, and a
    # child is only reachable through a kept parent, so the tree stays connected.
    counter = 0
    heap: list[tuple[int, int, str, _Node]] = []
    for key, child in root.children.items():
        heapq.heappush(heap, (-child.value, counter, f"{ROOT_ID}/{key}", child))
        counter += 1
    parent_of = {f"{ROOT_ID}/{k}": ROOT_ID for k in root.children}
    while heap:
        neg, _, node_id, node = heapq.heappop(heap)
        if -neg < threshold or len(ids) >= max_nodes:
            folded += 1 + _count_descendants(node)
            continue
        ids.append(node_id)
        labels.append(node.label)
        parents.append(parent_of[node_id])
        values.append(node.value)
        hovers.append(node.hover)
        for key, child in node.children.items():
            child_id = f"{node_id}/{key}"
            parent_of[child_id] = node_id
            heapq.heappush(heap, (-child.value, counter, child_id, child))
            counter += 1
    return IcicleData(ids, labels, parents, values, hovers, total, folded)


def _count_descendants(node: _Node) -> int:
    stack, n = list(node.children.values()), 0
    while stack:
        item = stack.pop()
        n += 1
        stack.extend(item.children.values())
    return n
