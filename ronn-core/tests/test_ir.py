"""The graph IR: ordering, validation, scopes."""

from __future__ import annotations

import pytest

from ronn.errors import InvalidGraphError
from ronn.ir import Graph, Node, ValueInfo


def graph(*nodes: Node, inputs=("x",), outputs=("y",)) -> Graph:
    return Graph(list(nodes), [ValueInfo(i) for i in inputs], [ValueInfo(o) for o in outputs], name="g")


def test_topological_order_sorts_out_of_order_nodes() -> None:
    g = graph(Node("Relu", ["a"], ["y"], name="second"), Node("Neg", ["x"], ["a"], name="first"))
    assert [n.name for n in g.topological_order()] == ["first", "second"]


def test_dangling_input_names_the_node() -> None:
    g = graph(Node("Relu", ["nowhere"], ["y"], name="r1"))
    with pytest.raises(InvalidGraphError, match=r"node 'r1' \(Relu\) reads 'nowhere'"):
        g.topological_order()


def test_cycle_names_the_nodes() -> None:
    g = graph(Node("Add", ["x", "b"], ["a"], name="n1"), Node("Neg", ["a"], ["b"], name="n2"), Node("Neg", ["a"], ["y"]))
    with pytest.raises(InvalidGraphError, match="cycle.*n1"):
        g.topological_order()


def test_duplicate_output_is_refused() -> None:
    g = graph(Node("Neg", ["x"], ["y"], name="a"), Node("Neg", ["x"], ["y"], name="b"))
    with pytest.raises(InvalidGraphError, match="redefines value 'y'"):
        g.topological_order()


def test_missing_graph_output() -> None:
    g = graph(Node("Neg", ["x"], ["z"]), outputs=("y",))
    with pytest.raises(InvalidGraphError, match="output 'y'"):
        g.topological_order()


def test_subgraph_free_variables_come_from_the_outer_scope() -> None:
    body = graph(Node("Add", ["x_outer", "w"], ["y"]), inputs=("w",), outputs=("y",))
    assert body.free_variables() == {"x_outer"}
    outer = Graph(
        [Node("Neg", ["x"], ["x_outer"]), Node("If", ["c"], ["y"], attributes={"then_branch": body, "else_branch": body})],
        [ValueInfo("x"), ValueInfo("c")], [ValueInfo("y")],
    )
    order = outer.topological_order()
    assert [n.op_type for n in order] == ["Neg", "If"]
    assert len(list(outer.walk())) == 4
