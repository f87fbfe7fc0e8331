"""The GraphQL reader behind save-time checks of enrichment steps."""

from __future__ import annotations

import pytest

from clarion.ingest.plans.graphql import QueryError, path_in_selection, read_query


def test_selection_variables_and_aliases() -> None:
    query = read_query(
        """
        # a comment { not a brace }
        query Q($sku: String!, $n: Int = 2, $tag: String) {
          p: product(sku: $sku, note: "a } brace") { price tags { name } }
          ...Extra
        }
        fragment Extra on Query { viewer { id } }
        """
    )
    assert query.variables == {"sku", "n", "tag"}
    assert query.required == {"sku"}
    assert path_in_selection(query.selection, ["p", "price"])
    assert path_in_selection(query.selection, ["p", "tags", "0", "name"])
    assert not path_in_selection(query.selection, ["p", "weight"])
    assert not path_in_selection(query.selection, ["p", "price", "cents"])
    assert path_in_selection(query.selection, ["viewer", "id"])  # behind a named fragment
    assert not path_in_selection(query.selection, ["viewer", "email"])  # the fragment is read


def test_a_fragment_defined_elsewhere_leaves_its_level_open() -> None:
    query = read_query("{ product { ...Remote ... on Product { sku } } }")
    assert path_in_selection(query.selection, ["product", "sku"])
    assert path_in_selection(query.selection, ["product", "anything"])
    assert not path_in_selection(query.selection, ["other"])


@pytest.mark.parametrize(
    "document",
    ["{ product { price }", "query { a } query { b }", "fragment F on Q { a }", "{ a ~ b }", ""],
)
def test_unreadable_documents(document: str) -> None:
    with pytest.raises(QueryError):
        read_query(document)
