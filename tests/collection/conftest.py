"""Fixtures of the collection API tests.

NOTE FOR THE OWNER OF THIS FILE: the collection-pipeline engineer overwrote this conftest by
accident (a file-creation tool call at about 17:48) and could not recover its previous content.
Please restore your version; nothing of the pipeline tests lives here any more (their fixtures
are in tests/collection/test_pipeline_fixtures.py).
"""
