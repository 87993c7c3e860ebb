"""Run the Argilla server (inside .argilla-venv) with osmem as its search engine.

osmem, the in-memory OpenSearch-compatible engine, does not run Painless scripts. Argilla updates
a record's document with a script in three places (a response saved or deleted, a suggestion
deleted); a response submitted from the web UI would then be stored in SQLite but never reach the
search index. Those three methods are replaced here, before the app is imported, by
read-modify-write ones: get the document, change it in Python, index it back.

Usage (scripts/argilla.sh does this): python scripts/argilla_launch.py HOST PORT
"""

from __future__ import annotations

import sys


def _patch() -> None:
    from argilla_server.search_engine.commons import es_index_name_for_dataset
    from argilla_server.search_engine.opensearch import OpenSearchEngine

    async def _rmw(self, index_name: str, doc_id: str, change) -> None:  # noqa: ANN001
        found = await self.client.get(index=index_name, id=doc_id)
        source = found["_source"]
        change(source)
        await self.client.index(index=index_name, id=doc_id, body=source, refresh=True)

    async def update_record_response(self, response) -> None:  # noqa: ANN001
        record = response.record
        mapped = self._map_record_response_to_es(response)

        def change(src: dict) -> None:
            kept = [r for r in (src.get("responses") or []) if r.get("id") != mapped.get("id")]
            src["responses"] = [*kept, mapped]

        await _rmw(self, es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_response(self, response) -> None:  # noqa: ANN001
        record = response.record
        mapped = self._map_record_response_to_es(response)

        def change(src: dict) -> None:
            src["responses"] = [r for r in (src.get("responses") or []) if r.get("id") != mapped.get("id")]

        await _rmw(self, es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_suggestion(self, suggestion) -> None:  # noqa: ANN001
        name = suggestion.question.name

        def change(src: dict) -> None:
            (src.get("suggestions") or {}).pop(name, None)

        index = es_index_name_for_dataset(suggestion.record.dataset)
        await _rmw(self, index, str(suggestion.record_id), change)

    OpenSearchEngine.update_record_response = update_record_response
    OpenSearchEngine.delete_record_response = delete_record_response
    OpenSearchEngine.delete_record_suggestion = delete_record_suggestion


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    _patch()
    import uvicorn

    uvicorn.run("argilla_server:app", host=host, port=port, access_log=False)


if __name__ == "__main__":
    main()
